"""Example-level DP-SGD in local training: per-example gradients, per-example L2 clipping, Gaussian
noise in every step (Abadi et al. 2016, *Deep Learning with Differential Privacy*, Algorithm 1).

A client trains with DP-SGD when its local plan carries :class:`~hamrah.algorithms.base.ExampleDP`
(``privacy.mode = "dpsgd"`` in a config); :func:`hamrah.algorithms.train_local` then takes each step's
gradient from :func:`noisy_mean_gradient`. Per-example gradients come from torch.func
(``vmap(grad_and_value(loss))`` over ``functional_call``): one batched pass instead of B backward
passes. Opacus would do the same with hooks but is not a dependency.

Two batch schedules, each with its own honest accounting (example-level DP of one client's data):

- ``poisson=True`` (Abadi et al.'s "lots"): each step keeps every example with probability q = B/n and
  divides by the expected batch size B; ``PoissonSampledDpEvent(q, Gaussian(z))`` per step.
- ``poisson=False``: the shuffled batches of :func:`hamrah.algorithms.batch_schedule`, divided by the
  actual batch size. Batches in an epoch are disjoint, so under replace-one neighbours an epoch is one
  Gaussian mechanism on a sum of sensitivity 2S: ``GaussianDpEvent(z / 2)`` per epoch (no claim of
  amplification by shuffling). With z = 0 and a huge clip this is exactly plain SGD.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, grad_and_value, vmap

from hamrah.algorithms.base import ExampleDP, LocalSGD
from hamrah.core.params import Params
from hamrah.privacy.accounting import RoundSpec, epsilon_of
from hamrah.task import DEFAULT_TASK, Task


def dp_of(plan: LocalSGD) -> ExampleDP:
    """Return ``plan``'s DP-SGD settings.

    Raises:
        ValueError: the plan does not train with DP-SGD.
    """
    if plan.example_dp is None:
        raise ValueError("this local plan does not train with DP-SGD (example_dp is None)")
    return plan.example_dp


def privacy_events(plan: LocalSGD, num_examples: int) -> list[tuple[RoundSpec, int]]:
    """Return the (spec, count) groups one run of ``plan`` on ``num_examples`` examples spends."""
    dp = dp_of(plan)
    if dp.poisson:
        batch = num_examples if plan.batch_size is None else plan.batch_size
        q = min(1.0, batch / max(num_examples, 1))
        return [(RoundSpec.poisson(dp.noise_multiplier, q), plan.steps(num_examples))]
    b = num_examples if plan.batch_size is None else plan.batch_size
    per_epoch = max(math.ceil(num_examples / max(b, 1)), 1)
    passes = plan.epochs if plan.num_steps is None else -(-plan.num_steps // per_epoch)  # begun epochs
    return [(RoundSpec.unsampled(dp.noise_multiplier), passes)]  # the factor 2 of replace-one: in RoundSpec


def example_epsilon(
    plan: LocalSGD, num_examples: int, delta: float, participations: int = 1, method: str = "rdp"
) -> float:
    """Return the example-level epsilon at ``delta`` of ``participations`` runs of ``plan``."""
    events = [(s, n * participations) for s, n in privacy_events(plan, num_examples)]
    return epsilon_of(events, delta, method)


def poisson_batches(num_examples: int, plan: LocalSGD, rng: np.random.Generator) -> list[np.ndarray]:
    """Return the Poisson-sampled batches of ``plan``: ``plan.steps(n)`` steps, each keeping every
    example with probability q = B/n (an empty batch still releases noise, as the accounting assumes)."""
    return list(iter_poisson_batches(num_examples, plan, rng))


def iter_poisson_batches(num_examples: int, plan: LocalSGD, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Yield :func:`poisson_batches`' batches one at a time (the same draws from ``rng``)."""
    batch = num_examples if plan.batch_size is None else plan.batch_size
    q = min(1.0, batch / max(num_examples, 1))
    for _ in range(plan.steps(num_examples)):
        yield np.flatnonzero(rng.random(num_examples) < q)


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
