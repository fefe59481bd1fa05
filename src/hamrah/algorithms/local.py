"""Client-side computation shared by every driver: batch schedules, local SGD, evaluation.

Pure computation on tensors, no I/O. The loss and the metrics come from a task
(:class:`hamrah.task.Task`; none given: the built-in cross-entropy classification). The simulator's
batched trainer reproduces exactly the schedule and loss defined here, so both paths give the same model.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from hamrah.algorithms.base import ExampleDP, GradientTransform, LocalSGD
from hamrah.algorithms.optimizers import local_optimizer
from hamrah.core.errors import ConfigError, TrainingStopped
from hamrah.core.metrics import Metric, merge_metrics
from hamrah.core.params import Params, load_state, model_state
from hamrah.data.federated import ArrayData
from hamrah.task import DEFAULT_TASK, Task, uses_builtin_loss
from hamrah.task.checks import check_loss, check_metrics, user_code
from hamrah.task.losses import PAD_LABEL, masked_mean_loss

__all__ = [
    "PAD_LABEL",
    "LocalResult",
    "batch_schedule",
    "evaluate",
    "evaluate_metrics",
    "iter_batches",
    "masked_mean_loss",
    "targets",
    "train_local",
]


def batch_schedule(num_examples: int, plan: LocalSGD, rng: np.random.Generator) -> list[np.ndarray]:
    """Return the index batches of local training: per pass a fresh shuffle cut into batches of B.

    ``plan.epochs`` passes, or with ``plan.num_steps`` set as many passes as needed, cut to that many steps.
    """
    return list(iter_batches(num_examples, plan, rng))


def iter_batches(num_examples: int, plan: LocalSGD, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Yield :func:`batch_schedule`'s batches one at a time, each pass shuffled when it is reached (the
    same draws from ``rng``): a plan of 10^9 epochs holds no list of them."""
    b = max(num_examples if plan.batch_size is None else plan.batch_size, 1)  # a client without examples: no batch
    passes = plan.epochs if plan.num_steps is None else -(-plan.num_steps // max(-(-num_examples // b), 1))
    left = math.inf if plan.num_steps is None else plan.num_steps
    for _ in range(passes):
        perm = rng.permutation(num_examples)
        for i in range(0, num_examples, b):
            if left <= 0:
                return
            left -= 1
            yield perm[i : i + b]


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
    task: Task | None = None,
    stop: Callable[[], bool] | None = None,
) -> LocalResult:
    """Run ``plan`` (minibatch SGD) on one client's data from ``global_params``.

    Each minibatch gradient of ``task.loss`` passes through ``transforms`` in order, then the plan's
    optimizer (momentum, Adam: :func:`hamrah.algorithms.optimizers.local_optimizer`), then
    w <- w - lr * direction. This is the only local training loop; algorithms differ by
    transforms. Plain SGD of the built-in cross-entropy on class labels runs the model's hand-written
    ``sgd_step(lr)`` when it has one. With ``plan.example_dp`` the gradient is DP-SGD's
    (:mod:`hamrah.algorithms.dpsgd`: per-example clipping and noise seeded from ``rng``). ``stop`` is
    asked before each step; when it answers True, :class:`~hamrah.core.errors.TrainingStopped` is raised.
    """
    task = DEFAULT_TASK if task is None else task
    chain = list(transforms) + local_optimizer(plan)
    names = [n for n, _ in model.named_parameters()]
    load_state(model, global_params)  # parameters and BatchNorm buffers
    model.train()
    params: list[torch.Tensor] = list(model.parameters())
    y_all = targets(data.y, ignore_index)
    dp = plan.example_dp
    draw = iter_batches
    if dp is not None and dp.poisson:
        from hamrah.algorithms.dpsgd import iter_poisson_batches as draw
    batches = draw(len(data), plan, copy.deepcopy(rng))  # drawn step by step, from a copy of rng
    for i, _ in enumerate(draw(len(data), plan, rng)):  # rng left past the whole schedule, as the steps after expect
        if stop is not None and i % 4096 == 0 and stop():
            raise TrainingStopped("local training stopped before its first step")
    fused = getattr(model, "sgd_step", None)
    if dp is not None:
        step = _dpsgd_step(model, names, params, chain, plan, dp, len(data), task, rng)
    elif fused is not None and not chain and ignore_index is None and uses_builtin_loss(task):
        step = fused(plan.lr)  # the model's hand-written plain-SGD step: the same update, faster
    else:

        def step(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            loss = check_loss(task, task.loss(model(x), y))
            # a parameter the loss does not use this batch gets a zero gradient (as DP-SGD's per-example one)
            grads = list(torch.autograd.grad(loss, params, materialize_grads=True))
            with torch.no_grad():
                for t in chain:
                    grads = t(names, params, grads)
                torch._foreach_add_(params, grads, alpha=-plan.lr)
            return loss.detach()

    total = torch.zeros(())
    steps = 0
    with user_code(task, "local training"):  # the user's model or loss raising: one line naming the task
        for idx in batches:
            if stop is not None and stop():
                raise TrainingStopped(f"local training stopped after {steps} steps")
            ix = torch.from_numpy(idx)
            total += step(data.x[ix], y_all[ix])
            steps += 1
    local = {k: v for k, v in model_state(model).items() if k in global_params}
    return LocalResult(local, float(total) / max(steps, 1), steps)


def _dpsgd_step(
    model: nn.Module,
    names: list[str],
    params: list[torch.Tensor],
    chain: list[GradientTransform],
    plan: LocalSGD,
    dp: ExampleDP,
    n: int,
    task: Task,
    rng: np.random.Generator,
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Return train_local's step with DP-SGD's gradient (the noise generator seeded from ``rng`` after the
    batch schedule is drawn: with z = 0, a huge clip and shuffled batches it equals plain SGD)."""
    from hamrah.algorithms.dpsgd import noisy_mean_gradient, per_example_grads

    generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
    expected = float(min(plan.batch_size or n, n))  # Poisson: divide by the expected batch size

    def step(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        live = {k: p.detach() for k, p in zip(names, params)}
        if len(x):
            try:
                per_example, losses = per_example_grads(model, live, x, y, task)
            except RuntimeError as e:  # vmap cannot batch it (.item(), data-dependent control flow, ...)
                raise ConfigError(
                    f'privacy.mode = "dpsgd": the model or loss of task {task.task_name!r} cannot be computed per '
                    f"example under torch.func.vmap ({str(e).splitlines()[0][:200]}); expected torch operations "
                    "without .item() or Python control flow on tensor values"
                ) from None
            loss = losses.mean()
        else:  # an empty Poisson batch still releases noise
            per_example = {k: torch.zeros((0, *v.shape), dtype=v.dtype) for k, v in live.items()}
            loss = torch.zeros(())
        denominator = expected if dp.poisson else float(max(len(x), 1))
        noisy = noisy_mean_gradient(per_example, dp.clip, dp.noise_multiplier, denominator, generator)
        grads = [noisy[k] for k in names]
        with torch.no_grad():
            for t in chain:
                grads = t(names, params, grads)
            torch._foreach_add_(params, grads, alpha=-plan.lr)
        return loss.detach()

    return step


@torch.no_grad()
def evaluate_metrics(
    model: nn.Module,
    params: Params,
    data: ArrayData,
    ignore_index: int | None = None,
    task: Task | None = None,
    batch_size: int = 2000,
) -> dict[str, Metric]:
    """Return ``task``'s metrics of ``params`` on ``data``, merged over batches (unreduced: they merge
    further); in eval mode: BatchNorm uses the running statistics in ``params``."""
    task = DEFAULT_TASK if task is None else task
    load_state(model, params)
    model.eval()
    out: dict[str, Metric] = {}
    with user_code(task, "evaluation"):  # the user's model or metrics raising: one line naming the task
        for i in range(0, len(data), batch_size):
            x, y = data.x[i : i + batch_size], targets(data.y[i : i + batch_size], ignore_index)
            out = merge_metrics(out, check_metrics(task, task.metrics(model(x), y)))
    return out


def evaluate(
    model: nn.Module, params: Params, data: ArrayData, ignore_index: int | None = None, batch_size: int = 2000
) -> tuple[float, float]:
    """Return (mean loss, accuracy) of ``params`` on ``data``, over all non-padding targets (cross-entropy)."""
    m = evaluate_metrics(model, params, data, ignore_index, None, batch_size)
    if not m:
        return 0.0, 0.0
    loss, acc = m["loss"], m["accuracy"]
    return loss.total / max(loss.weight, 1), acc.total / max(acc.weight, 1)  # type: ignore[union-attr]
