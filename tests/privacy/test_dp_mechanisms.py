"""Clipping, Gaussian noise, DP-FedAvg's noised average and local DP releases."""

from __future__ import annotations

import math

import pytest
import torch

from hamrah.core.errors import ConfigError, NotEnoughClients
from hamrah.privacy import (
    add_gaussian_noise,
    central_noise_std,
    clip_update,
    dp_fedavg_aggregate,
    estimator_denominator,
    gaussian_noise_like,
    l2_norm,
    local_dp_release,
)


def _update(scale: float = 1.0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return {"w": torch.randn(20, 5, generator=g) * scale, "b": torch.randn(5, generator=g) * scale}


def _sample_std_ok(x: torch.Tensor, std: float) -> None:
    """Sample std within 6 standard errors of ``std`` (s/sigma has std ~ 1/sqrt(2n)); mean within 6 s.e."""
    n = x.numel()
    assert abs(float(x.std()) / std - 1) < 6 / math.sqrt(2 * n)
    assert abs(float(x.mean())) < 6 * std / math.sqrt(n)


def test_norm_is_over_all_tensors_together():
    u = {"a": torch.tensor([3.0]), "b": torch.tensor([4.0, 0.0])}
    assert l2_norm(u) == pytest.approx(5.0)


def test_clipping_bounds_the_norm_and_keeps_the_direction():
    u = _update(10.0)
    clipped, norm = clip_update(u, 2.0)
    assert norm == pytest.approx(l2_norm(u))
    assert l2_norm(clipped) == pytest.approx(2.0, rel=1e-5)
    for k in u:
        assert torch.allclose(clipped[k], u[k] * (2.0 / norm))


def test_small_update_is_left_unchanged():
    u = _update(0.01)
    clipped, norm = clip_update(u, 100.0)
    assert norm < 100
    for k in u:
        assert torch.equal(clipped[k], u[k])
        assert clipped[k] is not u[k]  # a copy: the caller's update is never aliased


@pytest.mark.parametrize("clip", [0, -1.0, float("inf"), float("nan")])
def test_bad_clip_is_a_config_error(clip):
    with pytest.raises(ConfigError, match="clip norm"):
        clip_update(_update(), clip)


def test_noise_std_matches():
    noise = gaussian_noise_like({"x": torch.zeros(200_000)}, 0.7, torch.Generator().manual_seed(3))
    _sample_std_ok(noise["x"], 0.7)


def test_seeded_noise_is_reproducible_and_leaves_global_state_alone():
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = add_gaussian_noise(_update(), 1.0, torch.Generator().manual_seed(5))
    b = add_gaussian_noise(_update(), 1.0, torch.Generator().manual_seed(5))
    c = add_gaussian_noise(_update(), 1.0, torch.Generator().manual_seed(6))
    assert torch.equal(torch.get_rng_state(), before)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["w"], c["w"])


def test_dp_fedavg_noise_std_is_z_s_over_m():
    # m identical clipped updates: the exact mean is known, the residual is pure noise of std z*S/m.
    z, s, m = 1.3, 0.5, 8
    base = {"x": torch.full((100_000,), 0.01)}
    out = dp_fedavg_aggregate([base] * m, s, z, float(m), torch.Generator().manual_seed(0))
    assert central_noise_std(s, z, m) == pytest.approx(z * s / m)
    _sample_std_ok(out["x"] - 0.01, z * s / m)


def test_dp_fedavg_without_noise_is_the_fixed_denominator_mean():
    ups = [_update(1.0), _update(2.0)]
    out = dp_fedavg_aggregate(ups, 1.0, 0.0, 4.0, torch.Generator())
    for k in out:
        assert torch.allclose(out[k], (ups[0][k] + ups[1][k]) / 4.0)


def test_empty_poisson_round_releases_noise_only():
    tmpl = {"x": torch.zeros(50_000)}
    out = dp_fedavg_aggregate([], 1.0, 2.0, 10.0, torch.Generator().manual_seed(1), template=tmpl)
    _sample_std_ok(out["x"], 0.2)
    with pytest.raises(NotEnoughClients):
        dp_fedavg_aggregate([], 1.0, 2.0, 10.0, torch.Generator())


def test_estimator_denominator():
    assert estimator_denominator("fixed", cohort_size=10) == 10
    assert estimator_denominator("poisson", sampling_probability=0.01, population=3000) == pytest.approx(30)
    with pytest.raises(ConfigError, match="q\\*K > 0"):
        estimator_denominator("poisson", sampling_probability=0.0, population=10)
    with pytest.raises(ConfigError, match="poisson \\| fixed"):
        estimator_denominator("uniform", cohort_size=3)


def test_local_release_is_clipped_plus_z_s_noise():
    u = {"x": torch.ones(100_000)}  # norm 316: clipped to S = 2, each entry 2/316
    out = local_dp_release(u, 2.0, 0.5, torch.Generator().manual_seed(2))
    _sample_std_ok(out["x"] - 2.0 / math.sqrt(100_000), 0.5 * 2.0)


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.lists(st.floats(allow_nan=False, allow_infinity=False, width=32), min_size=1, max_size=20),
        min_size=1,
        max_size=4,
    )
)
def test_l2_norm_is_the_float64_norm_even_where_float32_overflows(rows):
    """A hostile update of huge finite float32 values gets its true norm, not inf (clipping then holds)."""
    update = {f"t{i}": torch.tensor(r, dtype=torch.float32) for i, r in enumerate(rows)}
    exact = math.sqrt(sum(float(x) ** 2 for r in rows for x in torch.tensor(r, dtype=torch.float32).double()))
    assert math.isfinite(l2_norm(update))
    assert l2_norm(update) == pytest.approx(exact, rel=1e-5)
    clipped, _ = clip_update(update, 1.0)
    assert l2_norm(clipped) <= 1.0 + 1e-5
