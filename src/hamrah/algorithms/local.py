"""Client-side computation shared by every driver: batch schedules, local SGD, loss, evaluation.

Pure computation on tensors, no I/O. The simulator's batched trainer reproduces exactly the schedule
and loss defined here, so both paths give the same model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hamrah.algorithms.base import GradientTransform, LocalSGD
from hamrah.algorithms.optimizers import local_optimizer
from hamrah.core.params import Params, load_state, model_state
from hamrah.data.federated import ArrayData

PAD_LABEL = -100  # targets with this value are ignored by the loss (torch's default ignore_index)


def batch_schedule(num_examples: int, plan: LocalSGD, rng: np.random.Generator) -> list[np.ndarray]:
    """Return the index batches of local training: per pass a fresh shuffle cut into batches of B.

    ``plan.epochs`` passes, or with ``plan.num_steps`` set as many passes as needed, cut to that many steps.
    """
    b = num_examples if plan.batch_size is None else plan.batch_size
    batches: list[np.ndarray] = []
    passes = plan.epochs if plan.num_steps is None else -(-plan.num_steps // max(-(-num_examples // max(b, 1)), 1))
    for _ in range(passes):
        perm = rng.permutation(num_examples)
        batches += [perm[i : i + b] for i in range(0, num_examples, b)]
    return batches if plan.num_steps is None else batches[: plan.num_steps]


def masked_mean_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy per leading row, averaged over its targets that are not ``PAD_LABEL``.

    ``logits`` is ``[..., C]`` and ``y`` the same shape without ``C``; returns one loss per entry of
    the first dimension (a client in batched training), 0 where a row has no valid target.
    """
    losses = F.cross_entropy(logits.flatten(0, -2), y.flatten(), ignore_index=PAD_LABEL, reduction="none")
    losses = losses.view(y.shape[0], -1)
    count = (y != PAD_LABEL).view(y.shape[0], -1).sum(1)
    return losses.sum(1) / count.clamp(min=1)


def targets(y: torch.Tensor, ignore_index: int | None) -> torch.Tensor:
    """Map a data set's padding value to ``PAD_LABEL``."""
    return y if ignore_index is None else y.masked_fill(y == ignore_index, PAD_LABEL)


@dataclass(frozen=True)
class LocalResult:
    """The outcome of local training: the client's new model, its mean training loss, its step count."""

    params: Params
    train_loss: float
    steps: int = 0


def train_local(
    model: nn.Module,
    global_params: Params,
    data: ArrayData,
    plan: LocalSGD,
    rng: np.random.Generator,
    ignore_index: int | None = None,
    transforms: Sequence[GradientTransform] = (),
) -> LocalResult:
    """Run ``plan`` (minibatch SGD) on one client's data from ``global_params``.

    Each minibatch gradient passes through ``transforms`` in order, then the plan's optimizer
    (momentum, Adam: :func:`hamrah.algorithms.optimizers.local_optimizer`), then
    w <- w - lr * direction. This is the only local training loop; algorithms differ by transforms.
    Plain SGD on class labels runs the model's hand-written ``sgd_step(lr)`` when it has one.
    """
    chain = list(transforms) + local_optimizer(plan)
    names = [n for n, _ in model.named_parameters()]
    load_state(model, global_params)  # parameters and BatchNorm buffers
    model.train()
    params = list(model.parameters())
    y_all = targets(data.y, ignore_index)
    fused = getattr(model, "sgd_step", None)
    if fused is not None and not chain and ignore_index is None:
        step = fused(plan.lr)  # the model's hand-written plain-SGD step: the same update, faster
    else:

        def step(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            loss = masked_mean_loss(model(x).unsqueeze(0), y.unsqueeze(0))[0]
            grads = list(torch.autograd.grad(loss, params))
            with torch.no_grad():
                for t in chain:
                    grads = t(names, params, grads)
                torch._foreach_add_(params, grads, alpha=-plan.lr)
            return loss.detach()

    total = torch.zeros(())
    steps = 0
    for idx in batch_schedule(len(data), plan, rng):
        ix = torch.from_numpy(idx)
        total += step(data.x[ix], y_all[ix])
        steps += 1
    local = {k: v for k, v in model_state(model).items() if k in global_params}
    return LocalResult(local, float(total) / max(steps, 1), steps)


@torch.no_grad()
def evaluate(
    model: nn.Module, params: Params, data: ArrayData, ignore_index: int | None = None, batch_size: int = 2000
) -> tuple[float, float]:
    """Return (mean loss, accuracy) of ``params`` on ``data``, over all non-padding targets (in eval
    mode: BatchNorm uses the running statistics in ``params``)."""
    load_state(model, params)
    model.eval()
    loss_sum, correct, count = 0.0, 0, 0
    for i in range(0, len(data), batch_size):
        logits = model(data.x[i : i + batch_size])
        y = targets(data.y[i : i + batch_size], ignore_index)
        valid = y != PAD_LABEL
        loss_sum += float(F.cross_entropy(logits.flatten(0, -2), y.flatten(), ignore_index=PAD_LABEL, reduction="sum"))
        correct += int(((logits.argmax(-1) == y) & valid).sum())
        count += int(valid.sum())
    return loss_sum / max(count, 1), correct / max(count, 1)
