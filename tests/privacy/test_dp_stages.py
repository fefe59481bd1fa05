"""DP stages in the update pipeline: central DP-FedAvg (fixed and adaptive clip) and local DP."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hamrah.core.errors import ConfigError
from hamrah.core.pipeline import Chain, DensePayload, process_round
from hamrah.privacy import AdaptiveClipConfig, DPConfig, clip_update, dp_fedavg_aggregate
from hamrah.privacy.stages import CentralGaussianNoise, DPClip, LocalGaussian, dp_stages


def _updates(m: int, d: int = 50, seed: int = 0) -> dict[int, dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return {k: {"w": torch.randn(d, generator=g) * (k + 1), "b": torch.randn(2, generator=g)} for k in range(m)}


def _round(chain: Chain, ups, server_state=None, round_idx=0, weights=None, **kw):
    rngs = {k: np.random.default_rng([round_idx, k]) for k in ups}
    return process_round(
        chain, ups, weights or {k: 1.0 for k in ups}, {}, rngs, server_state=server_state, round_idx=round_idx, **kw
    )


def test_without_noise_central_stages_give_the_clipped_mean():
    ups = _updates(4)
    out = _round(Chain([DPClip(2.0), CentralGaussianNoise(0.0, 2.0, expected_cohort=4)]), ups, through_bytes=True)
    clipped = [clip_update(u, 2.0)[0] for u in ups.values()]
    want = dp_fedavg_aggregate(clipped, 2.0, 0.0, 4.0, torch.Generator())
    for k in want:
        assert torch.allclose(out.aggregate[k], want[k], atol=1e-6)
    assert out.bytes.up[0] == DensePayload(ups[0]).nbytes


def test_poisson_round_divides_by_the_expected_cohort():
    ups = _updates(3)
    out = _round(Chain([DPClip(1.0), CentralGaussianNoise(0.0, 1.0, expected_cohort=6.0)]), ups)
    total = sum(clip_update(u, 1.0)[0]["w"] for u in ups.values())
    assert torch.allclose(out.aggregate["w"], total / 6.0, atol=1e-6)


def test_central_noise_std_is_z_s_over_m():
    ups = {k: {"w": torch.zeros(100_000)} for k in range(5)}
    out = _round(Chain([DPClip(3.0), CentralGaussianNoise(1.2, 3.0, expected_cohort=5)]), ups)
    x = out.aggregate["w"]
    assert abs(float(x.std()) / (1.2 * 3.0 / 5) - 1) < 6 / math.sqrt(2 * x.numel())


def test_unequal_weights_are_refused():
    ups = _updates(2)
    with pytest.raises(ConfigError, match="expected equal weights"):
        _round(Chain([DPClip(1.0), CentralGaussianNoise(1.0, 1.0, 2)]), ups, weights={0: 1.0, 1: 3.0})


def test_noise_before_clipping_is_refused_by_the_chain():
    with pytest.raises(ConfigError, match="clipping"):
        Chain([CentralGaussianNoise(1.0, 1.0, 2), DPClip(1.0)])


def test_adaptive_clip_tracks_the_median_across_rounds():
    m = 50
    chain = Chain(
        dp_stages(
            DPConfig(clip=0.05, noise_multiplier=1.0, adaptive=AdaptiveClipConfig(0.5, 0.3)),
            noise_multiplier=1.0,
            expected_cohort=m,
        )
    )
    state, rng = None, np.random.default_rng(0)
    for r in range(120):
        norms = rng.lognormal(0.0, 0.5, size=m)  # median norm 1
        ups = {k: {"w": torch.tensor([float(n), 0.0])} for k, n in enumerate(norms)}
        out = _round(chain, ups, server_state=state, round_idx=r)
        state = out.server_state
        assert set(out.aggregate) == {"w"}  # the auxiliary keys never leave the chain
    clip_state, noise_state = state
    assert clip_state.clip == noise_state.clip and clip_state.rounds == 120
    assert 0.75 < clip_state.clip < 1.33


def test_adaptive_without_its_noise_stage_is_refused():
    ups = _updates(2)
    with pytest.raises(ConfigError, match="needs a CentralGaussianNoise"):
        _round(Chain([DPClip(1.0, adaptive=True)]), ups)
    with pytest.raises(ConfigError, match="expected DPClip"):
        _round(Chain([DPClip(1.0), CentralGaussianNoise(1.0, 1.0, 2, AdaptiveClipConfig(clip_count_stddev=1.0))]), ups)


def test_local_dp_noise_is_per_client():
    m = 4
    ups = {k: {"w": torch.zeros(100_000)} for k in range(m)}
    out = _round(Chain(dp_stages(DPConfig(mode="local", clip=2.0, noise_multiplier=0.5), 0.5, m)), ups)
    x = out.aggregate["w"]  # mean of m independent N(0, (zS)^2)
    assert abs(float(x.std()) / (0.5 * 2.0 / math.sqrt(m)) - 1) < 6 / math.sqrt(2 * x.numel())
    assert isinstance(dp_stages(DPConfig(mode="local", noise_multiplier=1.0), 1.0, 4)[0], LocalGaussian)
    assert dp_stages(DPConfig(mode="dpsgd", noise_multiplier=1.0), 1.0, 4) == []


def test_same_seed_same_round():
    ups = _updates(3)
    chain = Chain([DPClip(1.0), CentralGaussianNoise(1.0, 1.0, 3)])
    a, b = _round(chain, ups, round_idx=5), _round(chain, ups, round_idx=5)
    assert torch.equal(a.aggregate["w"], b.aggregate["w"])
