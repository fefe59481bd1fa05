"""On-device DP-SGD: per-example gradients, per-example L2 clipping, Gaussian noise in every step.

Abadi et al. 2016, *Deep Learning with Differential Privacy* (CCS), Algorithm 1. Per-example
gradients come from torch.func (``vmap(grad_and_value(loss))`` over ``functional_call``): one batched
pass instead of B backward passes. Opacus would do the same with hooks but is not a dependency.

Two batch schedules, each with its own honest accounting (example-level DP of one client's data):

- ``poisson=True`` (Abadi et al.'s "lots"): each step keeps every example with probability q = B/n and
  divides by the expected batch size B; ``PoissonSampledDpEvent(q, Gaussian(z))`` per step.
- ``poisson=False``: the shuffled batches of :func:`hamrah.algorithms.batch_schedule`, divided by the
  actual batch size. Batches in an epoch are disjoint, so under replace-one neighbours an epoch is one
  Gaussian mechanism on a sum of sensitivity 2S: ``GaussianDpEvent(z / 2)`` per epoch (no claim of
  amplification by shuffling). With z = 0 and a huge clip this is exactly ``train_local``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, grad_and_value, vmap

from hamrah.algorithms.base import LocalSGD
from hamrah.algorithms.local import LocalResult, batch_schedule, targets
from hamrah.core.errors import ConfigError
from hamrah.core.params import Params
from hamrah.data.federated import ArrayData
from hamrah.privacy.accounting import RoundSpec, epsilon_of
from hamrah.task import DEFAULT_TASK, Task


@dataclass(frozen=True)
class DPSGDPlan:
    """Local DP-SGD a client runs: E epochs of clipped, noised minibatch SGD.

    Attributes:
        epochs: E.
        batch_size: B (the expected batch size under Poisson sampling).
        lr: learning rate.
        clip: S, the per-example L2 clip norm.
        noise_multiplier: z; the noise on the sum of clipped gradients has std z*S.
        poisson: Poisson-sampled batches (True) or shuffled fixed batches (False).

    Raises:
        ConfigError: a value is out of range.
    """

    epochs: int
    batch_size: int
    lr: float
    clip: float
    noise_multiplier: float
    poisson: bool = True

    def __post_init__(self) -> None:
        LocalSGD(self.epochs, self.batch_size, self.lr)  # validates epochs, batch_size, lr
        if self.batch_size is None:
            raise ConfigError("dpsgd batch_size = None: expected an integer >= 1 (DP-SGD needs a batch size)")
        if not (isinstance(self.clip, (int, float)) and self.clip > 0 and math.isfinite(self.clip)):
            raise ConfigError(f"dpsgd clip = {self.clip!r}: expected a positive finite number")
        z = self.noise_multiplier
        if isinstance(z, bool) or not (isinstance(z, (int, float)) and z >= 0 and math.isfinite(z)):
            raise ConfigError(f"dpsgd noise_multiplier = {z!r}: expected a finite number >= 0")

    def sgd(self) -> LocalSGD:
        """Return the plain-SGD plan with the same epochs, batch size and learning rate."""
        return LocalSGD(self.epochs, self.batch_size, self.lr)

    def privacy_events(self, num_examples: int) -> list[tuple[RoundSpec, int]]:
        """Return the (spec, count) groups one run of this plan on ``num_examples`` examples spends."""
        if self.poisson:
            q = min(1.0, self.batch_size / max(num_examples, 1))
            return [(RoundSpec.poisson(self.noise_multiplier, q), self.sgd().steps(num_examples))]
        return [(RoundSpec.unsampled(self.noise_multiplier), self.epochs)]

    def epsilon(self, num_examples: int, delta: float, participations: int = 1, method: str = "rdp") -> float:
        """Return the example-level epsilon at ``delta`` after ``participations`` runs of this plan."""
        return epsilon_of([(s, n * participations) for s, n in self.privacy_events(num_examples)], delta, method)


def per_example_grads(
    model: nn.Module, params: Params, x: torch.Tensor, y: torch.Tensor, task: Task | None = None
) -> tuple[Params, torch.Tensor]:
    """Return (gradient of each example's loss, stacked along dim 0; the per-example losses).

    The loss is ``task.loss`` (None: the built-in cross-entropy) on a batch of one example, the loss
    ``train_local`` averages over a batch; ``y`` must already use ``PAD_LABEL`` for padding. The task's
    loss must be written in torch operations ``torch.func.vmap`` can batch.
    """
    buffers = dict(model.named_buffers())
    task = DEFAULT_TASK if task is None else task

    def loss(p: Params, xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        output = functional_call(model, (p, buffers), (xi.unsqueeze(0),))
        return task.loss(output, yi.unsqueeze(0))

    return vmap(grad_and_value(loss), in_dims=(None, 0, 0))(params, x, y)


def clip_per_example(grads: Params, clip: float) -> tuple[Params, torch.Tensor]:
    """Return (sum over examples of each gradient scaled by min(1, S / ||g_i||), the norms ||g_i||)."""
    flat = torch.stack([g.flatten(1).pow(2).sum(1) for g in grads.values()], 1)
    norms = flat.sum(1).sqrt()
    factors = (clip / (norms + 1e-12)).clamp(max=1.0)
    return {k: torch.einsum("b,b...->...", factors, g) for k, g in grads.items()}, norms


def noisy_mean_gradient(
    grads: Params, clip: float, noise_multiplier: float, denominator: float, generator: torch.Generator
) -> Params:
    """Return (sum_i clip(g_i) + N(0, (z*S)^2)) / denominator: Abadi et al.'s noised gradient."""
    summed, _ = clip_per_example(grads, clip)
    out: Params = {}
    for k, v in summed.items():
        noise = torch.randn(v.shape, generator=generator, device=generator.device, dtype=torch.float32)
        out[k] = (v + (noise * (noise_multiplier * clip)).to(v.device, v.dtype)) / denominator
    return out


def _batches(n: int, plan: DPSGDPlan, rng: np.random.Generator) -> list[np.ndarray]:
    if not plan.poisson:
        return batch_schedule(n, plan.sgd(), rng)
    q = min(1.0, plan.batch_size / max(n, 1))
    return [np.flatnonzero(rng.random(n) < q) for _ in range(plan.sgd().steps(n))]


def train_local_dpsgd(
    model: nn.Module,
    global_params: Params,
    data: ArrayData,
    plan: DPSGDPlan,
    rng: np.random.Generator,
    ignore_index: int | None = None,
    task: Task | None = None,
) -> LocalResult:
    """Run ``plan`` (E epochs of DP-SGD) on one client's data from ``global_params``, descending ``task``'s loss.

    The counterpart of :func:`hamrah.algorithms.train_local`; the noise generator is seeded from
    ``rng`` after the batch schedule is drawn, so with z = 0, a huge clip and ``poisson=False`` the
    result equals ``train_local`` with the same ``rng``. Its privacy cost: ``plan.epsilon(len(data), delta)``.
    The reported ``train_loss`` is a plain (non-private) metric.
    """
    params = {k: v.detach().clone() for k, v in global_params.items()}
    y_all = targets(data.y, ignore_index)
    batches = _batches(len(data), plan, rng)
    generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
    total, steps = 0.0, 0
    for idx in batches:
        ix = torch.from_numpy(idx)
        # Poisson: the expected batch size q*n (= B unless the client has fewer than B examples)
        denominator = float(min(plan.batch_size, len(data))) if plan.poisson else float(max(len(idx), 1))
        if len(idx):
            grads, losses = per_example_grads(model, params, data.x[ix], y_all[ix], task)
            total += float(losses.mean())
        else:  # an empty Poisson batch still releases noise, as the accounting assumes
            grads = {k: torch.zeros((0, *v.shape), dtype=v.dtype) for k, v in params.items()}
        step = noisy_mean_gradient(grads, plan.clip, plan.noise_multiplier, denominator, generator)
        for k in params:
            params[k] = params[k] - plan.lr * step[k]
        steps += 1
    return LocalResult(params, total / max(steps, 1))
