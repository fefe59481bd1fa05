"""Adaptive clipping: the clip norm tracks a quantile of the update norms, privately.

Andrew et al. 2021, *Differentially Private Learning with Adaptive Clipping* (NeurIPS), Algorithm 1:
each client reports the *shifted* bit b_i - 1/2 in {-1/2, +1/2}, b_i = 1 if ||Delta_i|| <= C (as
TF Privacy's ``QuantileEstimatorQuery`` does); the server forms the noised fraction
b = (sum_i (b_i - 1/2) + N(0, sigma_b^2)) / m + 1/2 and updates C <- C * exp(-eta_C (b - gamma))
(geometric update). Adding or removing one client moves the shifted sum by at most 1/2 (an unshifted
0/1 bit would move it by 1), so the count is a Gaussian mechanism of multiplier sigma_b / (1/2) = 2 sigma_b.
Releasing it costs privacy too, so the update noise multiplier is raised to
z_Delta = (z^-2 - (2 sigma_b)^-2)^(-1/2) (their Theorem 1): the pair (z_Delta on the update,
2 sigma_b on the count) composes to one Gaussian mechanism with multiplier z, so the accountant keeps
using z. :data:`BIT_SENSITIVITY` is the 1/2 this relies on; the client half
(:func:`shifted_bit`) and the server's bound on each decoded bit enforce it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch

from hamrah.core.errors import ConfigError
from hamrah.privacy.config import AdaptiveClipConfig

BIT_SENSITIVITY = 0.5  # |b_i - 1/2|: what one client adds to or removes from the shifted count


def update_noise_multiplier(
    noise_multiplier: float, clip_count_stddev: float, bit_sensitivity: float = BIT_SENSITIVITY
) -> float:
    """Return z_Delta = (z^-2 - (s_b / sigma_b)^2)^(-1/2), the noise multiplier of the update itself.

    With the shifted bits' sensitivity s_b = 1/2 this is Andrew et al. 2021's (z^-2 - (2 sigma_b)^-2)^(-1/2).

    Args:
        noise_multiplier: z, the multiplier the accountant charges for a whole round.
        clip_count_stddev: sigma_b, the std of the noise on the shifted count.
        bit_sensitivity: s_b, the most one client's decoded bit can move the count (1/2, plus the
            rounding error of a fixed-point secure sum when one carries it).

    Raises:
        ConfigError: sigma_b / s_b <= z (the count alone would spend the whole round's budget).
    """
    z, sb = noise_multiplier, clip_count_stddev
    if z == 0:
        return 0.0
    if not sb / bit_sensitivity > z:
        raise ConfigError(
            f"privacy.clip_count_stddev = {sb:.6g} (sigma_b; default: expected cohort / 20) with noise_multiplier "
            f"= {z:.6g}: expected clip_count_stddev > {z * bit_sensitivity:.6g} (sigma_b / {bit_sensitivity:.6g} "
            "> z, else the clipped count alone spends the round's budget: Andrew et al. 2021's "
            "z_Delta = (z^-2 - (2 sigma_b)^-2)^-1/2 must be real)"
        )
    return z / math.sqrt(1.0 - (z * bit_sensitivity / sb) ** 2)  # the same, without z^-2 overflowing for tiny z


def unclipped_bit(norm: float, clip: float) -> bool:
    """Return b_i: True when an update of L2 norm ``norm`` passes the clip ``clip`` unchanged (client half)."""
    return norm <= clip


def shifted_bit(norm: float, clip: float) -> float:
    """Return b_i - 1/2 in {-1/2, +1/2}: what a client sends (sensitivity 1/2, TF Privacy's shift)."""
    return (1.0 if unclipped_bit(norm, clip) else 0.0) - BIT_SENSITIVITY


def noised_unclipped_fraction(
    bits: Sequence[bool], clip_count_stddev: float, denominator: float, generator: torch.Generator
) -> float:
    """Return b = (sum_i (b_i - 1/2) + N(0, sigma_b^2)) / denominator + 1/2 (server half)."""
    shifted = sum((1.0 if b else 0.0) - BIT_SENSITIVITY for b in bits)
    return noised_count_fraction(shifted, clip_count_stddev, denominator, generator)


def noised_count_fraction(
    shifted_sum: float, clip_count_stddev: float, denominator: float, generator: torch.Generator
) -> float:
    """Return (shifted_sum + N(0, sigma_b^2)) / denominator + 1/2, from an already summed shifted count."""
    noise = float(torch.randn((), generator=generator, device=generator.device)) * clip_count_stddev
    return (shifted_sum + noise) / denominator + BIT_SENSITIVITY


def geometric_clip_update(
    clip: float, unclipped_fraction: float, target_quantile: float, learning_rate: float
) -> float:
    """Return C * exp(-eta_C (b - gamma)), Andrew et al.'s geometric update."""
    return clip * math.exp(-learning_rate * (unclipped_fraction - target_quantile))


@dataclass(frozen=True)
class AdaptiveClipState:
    """The clip norm of the next round and the rounds it has been updated (explicit server state)."""

    clip: float
    rounds: int = 0


@dataclass(frozen=True)
class AdaptiveClipper:
    """Andrew et al. 2021's adaptive clip: the server half of the clip-norm estimate.

    Attributes:
        config: target quantile, learning rate and sigma_b.
        noise_multiplier: z, the multiplier charged by the accountant for a round.
        expected_cohort: m (fixed) or q*K (Poisson), the fixed denominator of the fraction.
        bit_sensitivity: the most one client's decoded bit moves the shifted count (1/2; more when a
            fixed-point secure sum rounds it).

    Example:
        >>> c = AdaptiveClipper(AdaptiveClipConfig(), noise_multiplier=1.0, expected_cohort=100)
        >>> s = c.init(0.1)
        >>> s = c.step(s, [unclipped_bit(n, s.clip) for n in (0.05, 0.2)], torch.Generator().manual_seed(0))
    """

    config: AdaptiveClipConfig
    noise_multiplier: float
    expected_cohort: float
    bit_sensitivity: float = BIT_SENSITIVITY

    def __post_init__(self) -> None:
        if not self.expected_cohort > 0:
            raise ConfigError(f"expected cohort = {self.expected_cohort!r}: expected a positive number")
        self.update_noise_multiplier()  # validates 2 sigma_b > z now, not in the middle of a run

    @property
    def clip_count_stddev(self) -> float:
        """Return sigma_b for this cohort size."""
        return self.config.count_stddev(self.expected_cohort)

    def update_noise_multiplier(self) -> float:
        """Return z_Delta, the multiplier to use for the noise on the averaged update."""
        return update_noise_multiplier(self.noise_multiplier, self.clip_count_stddev, self.bit_sensitivity)

    def init(self, clip: float) -> AdaptiveClipState:
        """Return the state before the first round, starting from ``clip``."""
        if not (clip > 0 and math.isfinite(clip)):
            raise ConfigError(f"initial clip = {clip!r}: expected a positive finite number")
        return AdaptiveClipState(float(clip))

    def step(self, state: AdaptiveClipState, bits: Sequence[bool], generator: torch.Generator) -> AdaptiveClipState:
        """Return the state after a round whose clients reported ``bits`` (b_i = norm_i <= state.clip)."""
        return self.step_count(state, sum((1.0 if b else 0.0) - BIT_SENSITIVITY for b in bits), generator)

    def step_count(self, state: AdaptiveClipState, shifted_sum: float, generator: torch.Generator) -> AdaptiveClipState:
        """Return the state after a round whose clients' shifted bits b_i - 1/2 sum to ``shifted_sum``."""
        b = noised_count_fraction(shifted_sum, self.clip_count_stddev, self.expected_cohort, generator)
        new = geometric_clip_update(state.clip, b, self.config.target_quantile, self.config.learning_rate)
        return replace(state, clip=new, rounds=state.rounds + 1)
