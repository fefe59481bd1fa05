"""Train a whole cohort at once: parameters stacked along a client dimension, one pass per step.

Reproduces :func:`hamrah.algorithms.local.train_local` exactly (same batch schedule, same loss: the
built-in cross-entropy, so it runs only for tasks that use it), but each SGD step runs every client's
batch through the model's ``batched_forward`` together. Models that are plain ReLU MLPs (``mlp_layers``,
or a user's ``nn.Sequential`` of ``Linear`` and ``ReLU`` layers, :func:`mlp_layers`) take a faster
path with a hand-written backward pass that updates the weights in place (one ``baddbmm_`` per
layer, no gradient tensors): on CPU the step is memory-bound, and this halves the traffic. Clients
with fewer steps or a short last batch are padded with ``PAD_LABEL`` targets, which contribute no
gradient, so their parameters stop moving exactly where the sequential loop would stop.

Beyond plain SGD it runs a proximal pull toward the round's model (FedProx's and FedNova's mu, Ditto's
lam: ``pull``; not applied on a client's padding steps) and per-client starting points
(``starts``: FedPer's own layers, Ditto's personal models), as the sequential client half does up to
the order of float operations.

A large cohort trains in groups of ``GROUP_SIZE`` clients, each group through all of its steps
before the next starts. One step reads and writes every stacked client's weights (0.8 MB per 2NN
client): ten clients' (8 MB) can stay in cache from one step to the next, a whole cohort of 100 (80
MB) cannot, and issue 11 measured the cost per client doubling from 10 to 20-100 clients per round.
Grouping keeps every stacked loop at the size of the fast case; ``benchmarks/bench_simulator.py
--cohorts`` measures grouped against one loop in the same run (``docs/benchmarks.md``). Clients never
interact inside a step and every group is padded to the cohort's widest batch, so grouping does not
change the arithmetic: the models are bit-for-bit those of one loop.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hamrah.algorithms.base import LocalSGD
from hamrah.algorithms.local import PAD_LABEL, LocalResult, batch_schedule, masked_mean_loss, targets
from hamrah.core.params import Params, stack
from hamrah.data.federated import ArrayData, ClientSlice

GROUP_SIZE = 10  # clients stacked in one loop (docs/benchmarks.md, "Large cohorts")


def mlp_layers(model: nn.Module) -> tuple[str, ...] | None:
    """Return the names of the linear layers of a plain ReLU MLP, or None when ``model`` is not one.

    A model declares them (``mlp_layers``), or is an ``nn.Sequential`` of an optional ``Flatten``, then
    ``Linear`` (with bias) layers with a ``ReLU`` between each two, ending on a ``Linear``.
    """
    declared = getattr(model, "mlp_layers", None)
    if declared is not None:
        return tuple(declared)
    if not isinstance(model, nn.Sequential):
        return None
    mods = list(model.named_children())
    if mods and isinstance(mods[0][1], nn.Flatten) and mods[0][1].start_dim == 1 and mods[0][1].end_dim == -1:
        mods = mods[1:]
    linear = mods[0::2]
    relu_ok = all(type(m) is nn.ReLU for _, m in mods[1::2])
    linear_ok = all(type(m) is nn.Linear and m.bias is not None for _, m in linear)
    if not mods or len(mods) % 2 == 0 or not (relu_ok and linear_ok):
        return None
    return tuple(name for name, _ in linear)


def supports_batching(model: nn.Module) -> bool:
    """Return True when ``model`` can train many clients in one pass."""
    return callable(getattr(model, "batched_forward", None)) or mlp_layers(model) is not None


def batched_forward(model: nn.Module):
    """Return ``model``'s ``batched_forward(params, x)``: its own, or the one of its MLP layers."""
    own = getattr(model, "batched_forward", None)
    if callable(own):
        return own
    layers = mlp_layers(model)

    def forward(params: Params, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(2)
        for i, n in enumerate(layers):
            x = torch.baddbmm(params[f"{n}.bias"].unsqueeze(1), x, params[f"{n}.weight"].transpose(1, 2))
            x = F.relu(x) if i < len(layers) - 1 else x
        return x

    return forward


def _stacked_batches(
    datas: Sequence[ArrayData | ClientSlice],
    schedules: list[list[np.ndarray]],
    ignore_index: int | None,
    width: int,
) -> tuple[Callable[[int], torch.Tensor], torch.Tensor]:
    """Every client's batches, padded to ``width`` (zero inputs, ``PAD_LABEL`` targets): a function
    giving step ``s``'s inputs ``[K, width, ...]``, and the targets ``[K, S, width, ...]`` of all steps.

    Clients that are slices of one pooled set (``ClientSlice``) gather each step's inputs from it when
    the step runs (a few hundred KB, in cache for the step); others are copied in one gather per client
    up front."""
    k, steps = len(datas), max(len(s) for s in schedules)
    idx = np.full((k, steps, width), -1, dtype=np.int64)
    for c, sched in enumerate(schedules):
        for s, b in enumerate(sched):
            idx[c, s, : len(b)] = b
    pad = torch.from_numpy(idx < 0)
    at = torch.from_numpy(np.maximum(idx, 0))
    padded_steps = pad.flatten(2).any(2).any(0).tolist()
    base = datas[0].base if isinstance(datas[0], ClientSlice) else None
    if base is not None and all(isinstance(d, ClientSlice) and d.base is base for d in datas):
        rows = torch.stack([d.index[at[c]] if len(d) else torch.zeros_like(at[c]) for c, d in enumerate(datas)])
        yb = targets(base.y[rows], ignore_index)
        yb = yb.masked_fill(pad.view(*pad.shape, *[1] * (yb.dim() - 3)), PAD_LABEL)
        shape = (k, width, *base.x.shape[1:])

        def pooled(s: int) -> torch.Tensor:
            x = base.x.index_select(0, rows[:, s].reshape(-1)).view(shape)
            return x.masked_fill_(pad[:, s].view(k, width, *[1] * (x.dim() - 2)), 0) if padded_steps[s] else x

        return pooled, yb
    x, y = datas[0].take(torch.zeros(0, dtype=torch.long))  # the shapes and dtypes
    xb = torch.empty((k, steps, width, *x.shape[1:]), dtype=x.dtype)
    yb = torch.empty((k, steps, width, *y.shape[1:]), dtype=torch.long)
    for c, d in enumerate(datas):
        if len(d) == 0:
            xb[c], yb[c] = 0, PAD_LABEL
            continue
        xs, ys = d.take(at[c])
        xb[c] = xs
        yb[c] = targets(ys, ignore_index)
        if bool(pad[c].any()):
            xb[c][pad[c]] = 0
            yb[c][pad[c]] = PAD_LABEL
    return (lambda s: xb[:, s]), yb


def train_cohort(
    model: nn.Module,
    global_params: Params,
    datas: Sequence[ArrayData | ClientSlice],
    plan: LocalSGD | Sequence[LocalSGD],
    rngs: Sequence[np.random.Generator],
    ignore_index: int | None = None,
    group_size: int | None = None,
    starts: Sequence[Params] | None = None,
    pull: float = 0.0,
) -> list[LocalResult]:
    """Train every client of a cohort from ``global_params`` in batched loops (plain SGD), a group at a time.

    Args:
        model: the model (its ``mlp_layers`` or ``batched_forward`` is used; its parameters are not changed).
        global_params: the starting point of every client.
        datas: each client's examples.
        plan: one plan for all, or one per client (epochs and steps may differ; lr must not).
        rngs: each client's generator (its batch schedule).
        ignore_index: target value that contributes no loss, or None.
        group_size: clients stacked in one loop (None: ``GROUP_SIZE``); the result does not depend on it.
        starts: each client's own starting point instead of ``global_params`` (personalized FL).
        pull: mu of a proximal term mu/2 ||w - global_params||^2 in every client's loss (Ditto's
            personal models; FedProx's transform in the sequential trainer).

    Returns:
        One :class:`LocalResult` per client, in the order of ``datas``.

    Raises:
        ValueError: plans with different learning rates, momentum, or ``group_size < 1``.
    """
    plans = [plan] * len(datas) if isinstance(plan, LocalSGD) else list(plan)
    if len({p.lr for p in plans}) > 1 or any(p.momentum for p in plans):
        raise ValueError("train_cohort: every client needs the same lr and no momentum")
    group_size = GROUP_SIZE if group_size is None else group_size
    if group_size < 1:
        raise ValueError(f"train_cohort: group_size = {group_size}, expected an integer >= 1")
    schedules = [batch_schedule(len(d), p, rng) for d, p, rng in zip(datas, plans, rngs)]
    # Every group is padded to the cohort's widest batch: a matrix product summed over a different
    # number of (zero) rows may round differently, and then grouping would change the models.
    width = max((len(b) for s in schedules for b in s), default=0)
    if width == 0:  # no client has a step: every model stays at the start
        begin = starts if starts is not None else [global_params] * len(datas)
        return [LocalResult({n: v.detach().clone() for n, v in b.items()}, 0.0, 0) for b in begin]
    out: list[LocalResult] = []
    for i in range(0, len(datas), group_size):
        part = slice(i, i + group_size)
        begin = list(starts[part]) if starts is not None else [global_params] * len(datas[part])
        out += _train_group(
            model, global_params, begin, datas[part], schedules[part], plans[0].lr, ignore_index, width, pull
        )
    return out


def _train_group(
    model: nn.Module,
    global_params: Params,
    starts: list[Params],
    datas: Sequence[ArrayData | ClientSlice],
    schedules: list[list[np.ndarray]],
    lr: float,
    ignore_index: int | None,
    width: int,
    pull: float,
) -> list[LocalResult]:
    """Train one group of clients, stacked from their starts, through their batch schedules (batches
    padded to ``width``), with the proximal pull toward ``global_params`` if ``pull > 0``."""
    batch, yb = _stacked_batches(datas, schedules, ignore_index, width)
    if all(s is global_params for s in starts):
        stacked = stack(global_params, len(datas))
    else:
        stacked = {n: torch.stack([s[n].detach() for s in starts]) for n in global_params}
    anchor = {n: v.detach().unsqueeze(0) for n, v in global_params.items()} if pull > 0 else None
    layers = mlp_layers(model)
    if layers is not None and yb.dim() == 3:
        pairs = [(stacked[f"{n}.weight"], stacked[f"{n}.bias"]) for n in layers]
        anchors = None if anchor is None else [(anchor[f"{n}.weight"], anchor[f"{n}.bias"]) for n in layers]
        step = _mlp_step(pairs, lr, yb, pull, anchors)
    else:
        step = _autograd_step(model, stacked, lr, yb, pull, anchor)
    names, params = list(stacked), list(stacked.values())
    loss_sum = torch.zeros(len(datas))
    for s in range(yb.shape[1]):
        loss_sum += step(batch(s), s)
    counts = torch.tensor([max(len(s), 1) for s in schedules], dtype=torch.float32)
    mean_loss = (loss_sum / counts).tolist()
    return [
        LocalResult({n: p[c].detach().clone() for n, p in zip(names, params)}, mean_loss[c], len(schedules[c]))
        for c in range(len(datas))
    ]


def _autograd_step(
    model: nn.Module, stacked: Params, lr: float, yb: torch.Tensor, pull: float = 0.0, anchor: Params | None = None
):
    """SGD step ``step(x, s)`` of any batched model through autograd, on step ``s``'s targets of ``yb``
    (with the proximal gradient pull * (w - anchor) added)."""
    params = [v.requires_grad_() for v in stacked.values()]
    anchors = [anchor[n] for n in stacked] if anchor is not None else None
    active = (yb != PAD_LABEL).flatten(2).any(2).float()  # [K, S]: 0 on a client's padding steps
    forward = batched_forward(model)

    def step(x: torch.Tensor, s: int) -> torch.Tensor:
        losses = masked_mean_loss(forward(stacked, x), yb[:, s])
        grads = list(torch.autograd.grad(losses.sum(), params))
        with torch.no_grad():
            if anchors is not None:  # the pull, only for clients still training
                on = active[:, s]
                diffs = [(p.detach() - a).mul_(on.view(-1, *[1] * (p.dim() - 1))) for p, a in zip(params, anchors)]
                grads = list(torch._foreach_add(grads, diffs, alpha=pull))
            torch._foreach_add_(params, grads, alpha=-lr)
        return losses.detach()

    return step


def _mlp_step(
    layers: list[tuple[torch.Tensor, torch.Tensor]],
    lr: float,
    yb: torch.Tensor,
    pull: float = 0.0,
    anchors: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
):
    """SGD step of a ReLU MLP with per-client weights [K, out, in], backward written by hand; what
    depends only on the targets ``yb`` [K, S, width] is computed once for every step. With ``anchors``
    each weight also moves by -lr * pull * (w - anchor), the proximal term's gradient at the step's start."""
    valid = yb != PAD_LABEL
    count = valid.sum(2, keepdim=True).clamp(min=1)  # [K, S, 1]
    labels = yb.clamp(min=0).unsqueeze(-1)  # [K, S, width, 1]
    scale = (valid / count).unsqueeze(-1)  # d(mean CE)/dz = (softmax - onehot) / count on valid rows, 0 on padding
    minus_one = torch.full((yb.shape[0], yb.shape[2], 1), -1.0)

    moving = valid.any(2) * (lr * pull)  # [K, S]: the pull's step, 0 on a client's padding steps (it has stopped)
    transposed = [w.transpose(1, 2) for w, _ in layers]  # views: they follow the in-place updates
    biases = [b.unsqueeze(1) for _, b in layers]

    @torch.no_grad()
    def step(x: torch.Tensor, s: int) -> torch.Tensor:
        inputs = [x.flatten(2)]
        for i, wt in enumerate(transposed):
            z = torch.baddbmm(biases[i], inputs[-1], wt)
            if i < len(layers) - 1:
                inputs.append(z.clamp_(min=0))
        label = labels[:, s]
        log_p = torch.log_softmax(z, -1)
        losses = -(log_p.gather(2, label).squeeze(-1) * valid[:, s]).sum(1) / count[:, s, 0]
        dz = log_p.exp_().scatter_add_(2, label, minus_one.to(z.dtype)).mul_(scale[:, s])
        for i in range(len(layers) - 1, -1, -1):
            w, b = layers[i]
            dh = torch.ops.aten.threshold_backward(torch.bmm(dz, w), inputs[i], 0) if i > 0 else None
            if anchors is not None:  # w - lr pull (w - a), before the gradient's step from the same w
                for p, a in zip((w, b), anchors[i]):
                    p.sub_((p - a).mul_(moving[:, s].view(-1, *[1] * (p.dim() - 1))))
            b.sub_(dz.sum(1), alpha=lr)
            w.baddbmm_(dz.transpose(1, 2), inputs[i], alpha=-lr)
            dz = dh
        return losses

    return step
