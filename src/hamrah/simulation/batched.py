"""Train a whole cohort at once: parameters stacked along a client dimension, one pass per step.

Reproduces :func:`hamrah.algorithms.local.train_local` exactly (same batch schedule, same loss), but
each SGD step runs every client's batch through the model's ``batched_forward`` together. Models
that are plain ReLU MLPs (``mlp_layers``) take a faster path with a hand-written backward pass that
updates the weights in place (one ``baddbmm_`` per layer, no gradient tensors): on CPU the step is
memory-bound, and this halves the traffic. Clients
with fewer steps or a short last batch are padded with ``PAD_LABEL`` targets, which contribute no
gradient, so their parameters stop moving exactly where the sequential loop would stop.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn

from hamrah.algorithms.base import LocalSGD
from hamrah.algorithms.local import PAD_LABEL, LocalResult, batch_schedule, masked_mean_loss, targets
from hamrah.core.params import Params, stack
from hamrah.data.federated import ArrayData


def supports_batching(model: nn.Module) -> bool:
    """Return True when ``model`` can train many clients in one pass."""
    return callable(getattr(model, "batched_forward", None))


def _stacked_batches(
    datas: Sequence[ArrayData], schedules: list[list[np.ndarray]], ignore_index: int | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gather every client's batches into ``[K, S, B, ...]`` inputs and targets, padded."""
    k = len(datas)
    steps = max(len(s) for s in schedules)
    width = max(len(b) for s in schedules for b in s)
    n_max = max(len(d) for d in datas)
    x = datas[0].x
    xs = torch.zeros((k, n_max + 1, *x.shape[1:]), dtype=x.dtype)  # row n_max is the pad row
    ys = torch.full((k, n_max + 1, *datas[0].y.shape[1:]), PAD_LABEL, dtype=torch.long)
    idx = np.full((k, steps, width), n_max, dtype=np.int64)
    for c, (d, sched) in enumerate(zip(datas, schedules)):
        xs[c, : len(d)] = d.x
        ys[c, : len(d)] = targets(d.y, ignore_index)
        for s, b in enumerate(sched):
            idx[c, s, : len(b)] = b
    rows = torch.arange(k).view(k, 1, 1)
    ix = torch.from_numpy(idx)
    return xs[rows, ix], ys[rows, ix]


def train_cohort(
    model: nn.Module, global_params: Params, datas: Sequence[ArrayData], plan: LocalSGD | Sequence[LocalSGD],
    rngs: Sequence[np.random.Generator], ignore_index: int | None = None,
) -> list[LocalResult]:
    """Train every client of a cohort from ``global_params`` in one batched loop (plain SGD).

    ``plan`` is one plan for all, or one per client (epochs and steps may differ; lr must not).
    """
    plans = [plan] * len(datas) if isinstance(plan, LocalSGD) else list(plan)
    if len({p.lr for p in plans}) > 1 or any(p.momentum for p in plans):
        raise ValueError("train_cohort: every client needs the same lr and no momentum")
    plan = plans[0]
    schedules = [batch_schedule(len(d), p, rng) for d, p, rng in zip(datas, plans, rngs)]
    xb, yb = _stacked_batches(datas, schedules, ignore_index)
    stacked = stack(global_params, len(datas))
    layers = getattr(model, "mlp_layers", None)
    if layers is not None and yb.dim() == 3:
        step = _mlp_step([(stacked[f"{n}.weight"], stacked[f"{n}.bias"]) for n in layers], plan.lr)
    else:
        step = _autograd_step(model, stacked, plan.lr)
    names, params = list(stacked), list(stacked.values())
    loss_sum = torch.zeros(len(datas))
    for s in range(xb.shape[1]):
        loss_sum += step(xb[:, s], yb[:, s])
    counts = torch.tensor([max(len(s), 1) for s in schedules], dtype=torch.float32)
    mean_loss = (loss_sum / counts).tolist()
    return [
        LocalResult({n: p[c].detach().clone() for n, p in zip(names, params)}, mean_loss[c], len(schedules[c]))
        for c in range(len(datas))
    ]


def _autograd_step(model: nn.Module, stacked: Params, lr: float):
    params = [v.requires_grad_() for v in stacked.values()]

    def step(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        losses = masked_mean_loss(model.batched_forward(stacked, x), y)
        grads = torch.autograd.grad(losses.sum(), params)
        with torch.no_grad():
            torch._foreach_add_(params, grads, alpha=-lr)
        return losses.detach()

    return step


def _mlp_step(layers: list[tuple[torch.Tensor, torch.Tensor]], lr: float):
    """SGD step of a ReLU MLP with per-client weights [K, out, in], backward written by hand."""

    @torch.no_grad()
    def step(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        inputs = [x.flatten(2)]
        for i, (w, b) in enumerate(layers):
            z = torch.baddbmm(b.unsqueeze(1), inputs[-1], w.transpose(1, 2))
            if i < len(layers) - 1:
                inputs.append(z.clamp_(min=0))
        valid = y != PAD_LABEL
        count = valid.sum(1, keepdim=True).clamp(min=1)
        label = y.clamp(min=0).unsqueeze(-1)
        log_p = torch.log_softmax(z, -1)
        losses = -(log_p.gather(2, label).squeeze(-1) * valid).sum(1) / count.squeeze(1)
        # d(mean CE)/dz = (softmax - onehot) / count on valid rows, 0 on padding
        dz = log_p.exp_().scatter_add_(2, label, torch.full_like(label, -1, dtype=z.dtype))
        dz.mul_((valid / count).unsqueeze(-1))
        for i in range(len(layers) - 1, -1, -1):
            w, b = layers[i]
            dh = torch.bmm(dz, w).mul_(inputs[i] > 0) if i > 0 else None
            b.sub_(dz.sum(1), alpha=lr)
            w.baddbmm_(dz.transpose(1, 2), inputs[i], alpha=-lr)
            dz = dh
        return losses

    return step
