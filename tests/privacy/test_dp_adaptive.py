"""Adaptive clipping (Andrew et al. 2021): the z_Delta formula and convergence to the target quantile."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hamrah.core.errors import ConfigError
from hamrah.privacy import (
    AdaptiveClipConfig,
    AdaptiveClipper,
    geometric_clip_update,
    noised_unclipped_fraction,
    unclipped_bit,
    update_noise_multiplier,
)


def test_z_delta_hand_computed_and_composes_back_to_z():
    # z = 1, sigma_b = 1: z_Delta = (1 - 1/4)^-1/2 = 2/sqrt(3)
    assert update_noise_multiplier(1.0, 1.0) == pytest.approx(2 / math.sqrt(3))
    z_delta = update_noise_multiplier(0.8, 5.0)
    assert (z_delta**-2 + (2 * 5.0) ** -2) ** -0.5 == pytest.approx(0.8)
    assert z_delta > 0.8


def test_z_delta_of_a_tiny_z_is_that_z_not_an_overflow():
    assert update_noise_multiplier(1e-300, 1.0) == pytest.approx(1e-300)  # z^-2 alone would overflow


def test_count_noise_that_would_spend_the_round_is_refused():
    with pytest.raises(ConfigError, match="expected clip_count_stddev > 1 "):
        update_noise_multiplier(2.0, 1.0)
    with pytest.raises(ConfigError, match="expected clip_count_stddev > 0.5 "):
        AdaptiveClipper(AdaptiveClipConfig(clip_count_stddev=0.1), noise_multiplier=1.0, expected_cohort=10)


def test_default_sigma_b_is_cohort_over_20():
    c = AdaptiveClipper(AdaptiveClipConfig(), noise_multiplier=1.0, expected_cohort=100)
    assert c.clip_count_stddev == 5.0


def test_geometric_update_moves_toward_the_quantile():
    assert geometric_clip_update(1.0, 0.9, 0.5, 0.2) == pytest.approx(math.exp(-0.08))  # too few clipped: shrink
    assert geometric_clip_update(1.0, 0.1, 0.5, 0.2) == pytest.approx(math.exp(0.08))  # too many clipped: grow
    assert geometric_clip_update(1.0, 0.5, 0.5, 0.2) == 1.0


def test_noised_fraction_without_noise_is_the_exact_fraction():
    bits = [unclipped_bit(n, 1.0) for n in (0.5, 1.0, 1.5, 3.0)]
    assert bits == [True, True, False, False]
    assert noised_unclipped_fraction(bits, 0.0, 4.0, torch.Generator()) == 0.5


@pytest.mark.parametrize("quantile", [0.3, 0.5, 0.8])
def test_clip_converges_to_the_target_quantile(quantile):
    # Norms ~ lognormal(0, 1): the gamma-quantile is exp(Phi^-1(gamma)); start 100x too small.
    m = 100
    clipper = AdaptiveClipper(AdaptiveClipConfig(quantile, 0.2), noise_multiplier=1.0, expected_cohort=m)
    state, rng, gen = clipper.init(0.01), np.random.default_rng(0), torch.Generator().manual_seed(0)
    late = []
    for r in range(400):
        norms = rng.lognormal(0.0, 1.0, size=m)
        state = clipper.step(state, [unclipped_bit(n, state.clip) for n in norms], gen)
        if r >= 300:
            late.append(state.clip)
    true_q = math.exp(float(torch.distributions.Normal(0, 1).icdf(torch.tensor(quantile))))
    clip = float(np.exp(np.mean(np.log(late))))
    assert state.rounds == 400
    assert abs(math.log(clip / true_q)) < 0.15, (clip, true_q)
    fraction = float(np.mean(rng.lognormal(0.0, 1.0, size=100_000) <= clip))
    assert abs(fraction - quantile) < 0.05


def test_a_count_noise_too_small_for_z_names_the_config_key_and_the_bound():
    # configs/dp_adaptive_mnist.toml with target_epsilon = 2 calibrates z = 6.5 against sigma_b = 1: the
    # message names the [privacy] key a user sets and the smallest value that works (z / 2)
    from hamrah.core.errors import ConfigError
    from hamrah.privacy.adaptive import update_noise_multiplier

    with pytest.raises(ConfigError, match=r"privacy\.clip_count_stddev = 1 .* expected clip_count_stddev > 3\.25"):
        update_noise_multiplier(6.5, 1.0)
