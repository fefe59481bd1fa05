"""Each robust aggregator stays near the honest mean within its stated tolerance and breaks beyond it."""

from __future__ import annotations

import pytest
import torch

from hamrah.aggregation import build_aggregator

K, D = 15, 40
SPREAD = 3 * 0.1 * D**0.5  # three honest per-client deviations


def _cohort(n_bad: int, bad_value: float = 100.0, seed: int = 0):
    """Return K deltas (honest ~ N(1, 0.1^2), the last n_bad all equal to bad_value) and the honest mean."""
    g = torch.Generator().manual_seed(seed)
    honest = 1.0 + 0.1 * torch.randn(K - n_bad, D, generator=g)
    bad = torch.full((n_bad, D), bad_value)
    rows = torch.cat([honest, bad])
    deltas = [{"w": r[: D // 2].reshape(4, 5).clone(), "b": r[D // 2 :].clone()} for r in rows]
    return deltas, honest.mean(0)


def _error(agg, deltas, honest_mean) -> float:
    out = agg(deltas, [1.0] * len(deltas))
    return float((torch.cat([out["w"].reshape(-1), out["b"]]) - honest_mean).norm())


# name, params, most attackers tolerated of K = 15, fewest that break it
CASES = [
    ("median", {}, 7, 8),
    ("trimmed_mean", {"beta": 0.2}, 3, 4),
    ("krum", {"f": 3}, 3, 8),
    ("multi_krum", {"f": 3, "m": 5}, 3, 8),
    ("bulyan", {"f": 3}, 3, 8),
    ("geomed", {}, 7, 8),
]


@pytest.mark.parametrize("name,params,tolerated,breaking", CASES, ids=[c[0] for c in CASES])
def test_resists_within_tolerance_and_breaks_beyond(name, params, tolerated, breaking):
    agg = build_aggregator(name, **params)
    agg.check(K)
    # within tolerance the error stays of the order of the honest spread (0.1 per coordinate, norm
    # ~0.63 per client), whatever the attackers send
    near = _error(agg, *_cohort(tolerated, 100.0))
    far = _error(agg, *_cohort(tolerated, 1e6))
    assert near < SPREAD and far < SPREAD
    # beyond it, the attackers drag the aggregate to them
    assert _error(agg, *_cohort(breaking, 100.0)) > 20.0
    assert _error(agg, *_cohort(breaking, 1e6)) > 1e5


def test_mean_breaks_with_one_attacker():
    agg = build_aggregator("mean")
    assert _error(agg, *_cohort(0)) < 1e-5
    assert _error(agg, *_cohort(1)) > 20.0


def test_norm_bound_caps_each_clients_pull():
    # honest norm ~ sqrt(40) = 6.3; bound 7 leaves them (nearly) whole, one attacker moves the mean
    # by at most bound / K per client
    agg = build_aggregator("norm_bound", bound=7.0)
    deltas, mu = _cohort(2, bad_value=1e4)
    assert _error(agg, deltas, mu) < 2 * 7.0 / K + 0.5
    # beyond: attackers inside the bound, all pointing the other way, move the mean as much as they like
    deltas, mu = _cohort(12, bad_value=-1.0)
    assert _error(agg, deltas, mu) > 5.0


def test_norm_bound_noise_is_seeded_and_has_the_stated_scale():
    deltas = [{"w": torch.zeros(20000)} for _ in range(3)]
    a = build_aggregator("norm_bound", bound=1.0, noise_std=0.01, seed=5)(deltas, [1, 1, 1])["w"]
    b = build_aggregator("norm_bound", bound=1.0, noise_std=0.01, seed=5)(deltas, [1, 1, 1])["w"]
    c = build_aggregator("norm_bound", bound=1.0, noise_std=0.01, seed=6)(deltas, [1, 1, 1])["w"]
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert abs(float(a.std()) - 0.01) < 0.0005


def test_geomed_uses_the_weights():
    # the heavier point wins once it holds more than half of the weight (Weiszfeld approaches it
    # linearly from the start at 5, so within 20 steps it is close, not exact)
    pts = [{"w": torch.tensor([0.0])}, {"w": torch.tensor([10.0])}]
    assert float(build_aggregator("geomed")(pts, [0.6, 0.4])["w"]) == pytest.approx(0.0, abs=0.05)
    assert float(build_aggregator("geomed")(pts, [0.4, 0.6])["w"]) == pytest.approx(10.0, abs=0.05)
    assert float(build_aggregator("geomed", max_iter=200, tol=0.0)(pts, [0.6, 0.4])["w"]) == pytest.approx(
        0.0, abs=1e-4
    )
