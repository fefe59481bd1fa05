"""Clipping and Gaussian noise on named parameter updates: the building blocks of every DP mode.

Central user-level DP-FedAvg follows McMahan et al. 2018 (*Learning Differentially Private Recurrent
Language Models*): each client's update is clipped in L2 to S over all its tensors together, the
server sums the clipped updates, divides by a fixed denominator (m for fixed-size cohorts, q*K for
Poisson sampling: the paper's fixed-denominator estimator f_f with unit weights) and adds Gaussian
noise with std z*S/denominator. Local DP clips and adds noise with std z*S on the device.

Randomness comes only from the ``torch.Generator`` passed in, never from global state.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

from hamrah.core.errors import ConfigError, NotEnoughClients
from hamrah.core.numbers import check_number
from hamrah.core.params import Params


def l2_norm(update: Mapping[str, torch.Tensor]) -> float:
    """Return the L2 norm of ``update``'s floating-point tensors taken together.

    Each tensor's norm is taken in its own dtype (fast) and redone in float64 when that overflows
    (float32 values past ~1e19), so a hostile update gets its true norm rather than ``inf``.
    Integer tensors (BatchNorm's counters) are not model weights and are left out.
    """
    total = 0.0
    for v in update.values():
        if v.is_floating_point():
            n = float(torch.linalg.vector_norm(v))
            if math.isinf(n) and bool(torch.isfinite(v).all()):
                n = float(torch.linalg.vector_norm(v, dtype=torch.float64))
            total = math.hypot(total, n)
    return total


def clip_update(update: Mapping[str, torch.Tensor], clip: float) -> tuple[Params, float]:
    """Scale ``update`` by min(1, clip / ||update||) (McMahan et al. 2018, Algorithm 1's ClipFn).

    Args:
        update: one client's model change, name -> tensor.
        clip: S > 0, the L2 bound over all tensors together.

    Returns:
        (the clipped update, the norm before clipping). An update within the bound is returned as an
        unchanged copy.

    Raises:
        ConfigError: ``clip`` is not a positive finite number.
    """
    check_number("clip norm", clip, 0.0, open_low=True)
    norm = l2_norm(update)
    scale = min(1.0, clip / norm) if norm > 0 else 1.0
    return {k: v * scale if scale < 1.0 else v.clone() for k, v in update.items()}, norm


def gaussian_noise_like(params: Mapping[str, torch.Tensor], std: float, generator: torch.Generator) -> Params:
    """Return i.i.d. N(0, std^2) tensors shaped like ``params``, drawn from ``generator``.

    Raises:
        ConfigError: ``std`` is negative or not finite.
    """
    check_number("noise std", std, 0.0)
    out: Params = {}
    for k, v in params.items():
        draw = torch.randn(v.shape, generator=generator, device=generator.device, dtype=torch.float32)
        out[k] = (draw * std).to(device=v.device, dtype=v.dtype)
    return out


def add_gaussian_noise(params: Mapping[str, torch.Tensor], std: float, generator: torch.Generator) -> Params:
    """Return ``params`` plus N(0, std^2) noise drawn from ``generator``."""
    noise = gaussian_noise_like(params, std, generator)
    return {k: v + noise[k] for k, v in params.items()}


def central_noise_std(clip: float, noise_multiplier: float, denominator: float) -> float:
    """Return z * S / denominator, the noise std on the averaged update (McMahan et al. 2018)."""
    return noise_multiplier * clip / denominator


def estimator_denominator(
    sampling: str,
    cohort_size: int | None = None,
    sampling_probability: float | None = None,
    population: int | None = None,
) -> float:
    """Return the fixed denominator: m for fixed-size cohorts, q*K (the expected cohort) for Poisson.

    Raises:
        ConfigError: the values the sampling scheme needs are missing or not positive.
    """
    if sampling == "fixed":
        if not cohort_size or cohort_size < 1:
            raise ConfigError(f"cohort size = {cohort_size!r}: expected an integer >= 1 for fixed-size sampling")
        return float(cohort_size)
    if sampling == "poisson":
        if not sampling_probability or not population or sampling_probability * population <= 0:
            raise ConfigError(
                f"q = {sampling_probability!r}, K = {population!r}: expected q*K > 0 for Poisson sampling"
            )
        return float(sampling_probability * population)
    raise ConfigError(f"sampling = {sampling!r}: expected poisson | fixed")


def sum_updates(updates: Sequence[Mapping[str, torch.Tensor]]) -> Params:
    """Return the name-by-name sum of ``updates``."""
    out = {k: torch.zeros_like(v) for k, v in updates[0].items()}
    for u in updates:
        for k, v in u.items():
            out[k].add_(v)
    return out


def dp_fedavg_aggregate(
    clipped: Sequence[Mapping[str, torch.Tensor]],
    clip: float,
    noise_multiplier: float,
    denominator: float,
    generator: torch.Generator,
    template: Mapping[str, torch.Tensor] | None = None,
) -> Params:
    """Return sum(clipped) / denominator + N(0, (z*S/denominator)^2): DP-FedAvg's noised average.

    Args:
        clipped: the cohort's updates, each already clipped to ``clip``.
        clip: S, the clip norm the updates were clipped to.
        noise_multiplier: z.
        denominator: m (fixed-size sampling) or q*K (Poisson), see :func:`estimator_denominator`.
        generator: the seeded source of the noise.
        template: shapes of the update, used when ``clipped`` is empty (a Poisson round that drew
            nobody still releases noise, as the accounting assumes).

    Raises:
        NotEnoughClients: ``clipped`` is empty and no ``template`` was given.
    """
    if clipped:
        total = sum_updates(clipped)
    elif template is not None:
        total = {k: torch.zeros_like(v) for k, v in template.items()}
    else:
        raise NotEnoughClients("DP-FedAvg: no clipped update to aggregate and no template for an empty round")
    mean = {k: v / denominator for k, v in total.items()}
    return add_gaussian_noise(mean, central_noise_std(clip, noise_multiplier, denominator), generator)


def local_dp_release(
    update: Mapping[str, torch.Tensor], clip: float, noise_multiplier: float, generator: torch.Generator
) -> Params:
    """Clip ``update`` to ``clip`` and add N(0, (z*S)^2) on the device: one local-DP release."""
    clipped, _ = clip_update(update, clip)
    return add_gaussian_noise(clipped, noise_multiplier * clip, generator)
