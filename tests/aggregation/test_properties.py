"""Property tests (issue 12, build item 2): for every robust rule, arbitrary finite honest inputs and at
most f attackers sending anything (any float32, 1e18, +-3e38, NaN, +-inf) give a finite output within
the bound the rule's docstring promises, and exactly that bound:

- median (f < K/2) and trimmed mean (f <= floor(beta K)): every coordinate within the honest
  [min, max] of that coordinate;
- Krum and Multi-Krum (K >= 2f + 3): ||out - honest mean|| <= (sqrt(K - f - 2) + 1) D_h, D_h the
  largest distance between two honest deltas;
- Bulyan (K >= 4f + 3): every coordinate within [lo - W, hi + W], W = hi - lo of the honest values;
- geometric median (equal weights, f < h honest): ||z - m|| <= (2 h r + (h + f) b) / (h - f) + K nu / (h - f),
  r the honest radius around their mean m, b the diagonal of the honest per-coordinate box;
- norm bound: ||out|| <= M for any inputs; FLTrust: ||out|| <= ||g_0|| for any inputs.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from hamrah.aggregation import build_aggregator, krum_scores
from hamrah.core.errors import ConfigError

SETTINGS = settings(max_examples=60, deadline=None)
HONEST = st.floats(-1e6, 1e6, width=32)
ANY = st.one_of(st.floats(width=32), st.sampled_from([1e18, -1e18, 3e38, -3e38, 0.0]))


@st.composite
def cohort(draw, rule: str):
    """Return (honest [h, d], attackers [f, d], rule parameters): f drawn up to the rule's own
    ``tolerance(K)``, the count the security lab holds the malicious share to, so the promise is
    tested exactly as far as the lab relies on it."""
    d = draw(st.integers(1, 5))
    if rule in ("median", "geomed"):
        k = draw(st.integers(1, 14))
        params = {}
    elif rule == "trimmed_mean":
        params = {"beta": draw(st.sampled_from([0.1, 0.2, 0.3, 0.45]))}
        k = draw(st.integers(3, 14))
    elif rule in ("krum", "multi_krum"):
        f = draw(st.integers(0, 3))
        k = draw(st.integers(2 * f + 3, 2 * f + 8))
        params = {"f": f} if rule == "krum" else {"f": f, "m": draw(st.integers(1, k - f))}
    else:  # bulyan
        f = draw(st.integers(0, 2))
        k = draw(st.integers(4 * f + 3, 4 * f + 6))
        params = {"f": f}
    agg = build_aggregator(rule, **params)
    agg.check(k)
    f = draw(st.integers(0, agg.tolerance(k)))
    honest = draw(hnp.arrays(np.float32, (k - f, d), elements=HONEST))
    bad = draw(hnp.arrays(np.float32, (f, d), elements=ANY))
    if rule == "geomed":  # its promise is for finite attackers (non-finite ones are dropped first)
        bad = np.nan_to_num(bad, nan=0.0, posinf=3e38, neginf=-3e38)
    return honest, bad, params


def _run(name: str, honest: np.ndarray, bad: np.ndarray, params: dict, order: int) -> torch.Tensor:
    rows = list(honest) + list(bad)
    perm = np.random.default_rng(order).permutation(len(rows))  # attackers anywhere in the cohort
    deltas = [{"w": torch.from_numpy(np.array(rows[i], dtype=np.float32))} for i in perm]
    out = build_aggregator(name, **params)(deltas, [1.0] * len(deltas))["w"]
    assert out.dtype == torch.float32 and bool(torch.isfinite(out).all())
    return out.double()


def _box(honest: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    h = torch.from_numpy(honest).double()
    return h.min(0).values, h.max(0).values


@SETTINGS
@given(
    st.sampled_from(["median", "trimmed_mean"]).flatmap(lambda r: st.tuples(st.just(r), cohort(r))), st.integers(0, 99)
)
def test_coordinate_rules_stay_in_the_honest_range(case, order):
    name, (honest, bad, params) = case
    out = _run(name, honest, bad, params, order)
    lo, hi = _box(honest)
    assert bool((out >= lo).all()) and bool((out <= hi).all())


@SETTINGS
@given(st.sampled_from(["krum", "multi_krum"]).flatmap(lambda r: st.tuples(st.just(r), cohort(r))), st.integers(0, 99))
def test_krum_selects_within_its_distance_bound(case, order):
    name, (honest, bad, params) = case
    out = _run(name, honest, bad, params, order)
    h = torch.from_numpy(honest).double()
    k, f = len(honest) + len(bad), params["f"]  # the rule's f: at least the attackers drawn
    diameter = float(torch.cdist(h, h).max())
    bound = (math.sqrt(k - f - 2) + 1) * diameter
    scale = float(h.abs().max()) + 1.0
    assert float((out - h.mean(0)).norm()) <= bound * (1 + 1e-6) + 1e-6 * scale


@SETTINGS
@given(cohort("bulyan"), st.integers(0, 99))
def test_bulyan_stays_within_the_widened_honest_range(case, order):
    honest, bad, params = case
    out = _run("bulyan", honest, bad, params, order)
    lo, hi = _box(honest)
    w = hi - lo
    slack = 1e-6 * (hi.abs() + lo.abs() + 1.0)
    assert bool((out >= lo - w - slack).all()) and bool((out <= hi + w + slack).all())


@SETTINGS
@given(cohort("geomed"), st.integers(0, 99))
def test_geometric_median_stays_within_its_distance_bound(case, order):
    honest, bad, params = case
    out = _run("geomed", honest, bad, params, order)
    h = torch.from_numpy(honest).double()
    nh, f = len(honest), len(bad)
    m = h.mean(0)
    r = float((h - m).norm(dim=1).max())
    lo, hi = _box(honest)
    b = float((hi - lo).norm())
    nu = 1e-6
    bound = (2 * nh * r + (nh + f) * b + (nh + f) * nu) / (nh - f)
    scale = float(h.abs().max()) + 1.0
    assert float((out - m).norm()) <= bound * (1 + 1e-5) + 1e-5 * scale


@SETTINGS
@given(
    hnp.arrays(np.float32, st.tuples(st.integers(1, 8), st.integers(1, 5)), elements=ANY),
    st.floats(1e-3, 1e3),
    st.lists(st.floats(0.0, 100.0), min_size=8, max_size=8),
)
def test_norm_bound_never_exceeds_its_bound(rows, bound, weights):
    if not np.isfinite(rows).all(axis=1).any():
        rows[0] = 0.0  # at least one finite client (none at all is NotEnoughClients, tested elsewhere)
    w = [x + 0.01 for x in weights[: len(rows)]]
    out = build_aggregator("norm_bound", bound=bound)([{"w": torch.from_numpy(r.copy())} for r in rows], w)["w"]
    assert bool(torch.isfinite(out).all()) and float(out.double().norm()) <= bound * (1 + 1e-5)


@SETTINGS
@given(hnp.arrays(np.float32, st.tuples(st.integers(1, 8), st.integers(1, 5)), elements=ANY), st.data())
def test_fltrust_never_exceeds_the_reference_norm(rows, data):
    ref = data.draw(hnp.arrays(np.float32, rows.shape[1], elements=HONEST))
    rule = build_aggregator("fltrust").with_reference({"w": torch.from_numpy(ref)})
    out = rule([{"w": torch.from_numpy(r.copy())} for r in rows], [1.0] * len(rows))["w"]
    assert bool(torch.isfinite(out).all())
    assert float(out.double().norm()) <= float(torch.from_numpy(ref).double().norm()) * (1 + 1e-5) + 1e-30


@SETTINGS
@given(cohort("krum"), st.integers(0, 99))
def test_krum_selects_a_delta_with_a_bounded_score_near_an_honest_one(case, order):
    """Krum (m = 1) returns one of the deltas; its score is at most (K - f - 2) D_h^2 (no more than the
    best honest score) and it lies within sqrt(K - f - 2) D_h of some honest delta."""
    honest, bad, params = case
    out = _run("krum", honest, bad, params, order)
    h = torch.from_numpy(honest).double()
    rows = torch.from_numpy(np.concatenate([honest, bad])).double()
    k, f = len(rows), params["f"]
    same = (rows == out).all(1)
    assert bool(same.any())  # the output is a delta, not a blend
    diameter = float(torch.cdist(h, h).max())
    scale = float(h.abs().max()) + 1.0
    scores = krum_scores(torch.from_numpy(np.concatenate([honest, bad])), f)
    picked = int(torch.nonzero(same)[0])
    assert float(scores[picked]) <= (k - f - 2) * diameter**2 * (1 + 1e-6) + 1e-6 * scale**2
    nearest = float((h - out).norm(dim=1).min())
    assert nearest <= math.sqrt(k - f - 2) * diameter * (1 + 1e-6) + 1e-6 * scale


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(["median", "geomed", "trimmed_mean", "krum", "multi_krum", "bulyan"]),
    st.integers(1, 40),
    st.integers(0, 12),
    st.sampled_from([0.0, 0.1, 0.2, 0.25, 0.3, 0.45, 0.5]),
)
def test_check_refuses_exactly_the_cohorts_the_papers_rule_out(name, k, f, beta):
    """``check(K)`` and ``tolerance(K)`` state the papers' conditions: Krum K > 2f + 2 (and m <= K - f),
    Bulyan K >= 4f + 3, a trimmed mean keeps a value (K > 2 floor(beta K)), the medians f < K/2."""
    params = {"median": {}, "geomed": {}, "trimmed_mean": {"beta": beta}, "krum": {"f": f}, "bulyan": {"f": f}}
    params["multi_krum"] = {"f": f, "m": 1}
    agg = build_aggregator(name, **params[name])
    ok = {
        "median": True,
        "geomed": True,
        "trimmed_mean": k > 2 * math.floor(beta * k + 1e-9),
        "krum": k > 2 * f + 2,
        "multi_krum": k > 2 * f + 2,
        "bulyan": k >= 4 * f + 3,
    }[name]
    try:
        agg.check(k)
        accepted = True
    except ConfigError:
        accepted = False
    assert accepted == ok
    tolerated = {"median": (k - 1) // 2, "geomed": (k - 1) // 2, "trimmed_mean": math.floor(beta * k + 1e-9)}
    assert agg.tolerance(k) == tolerated.get(name, f)
    assert 2 * agg.tolerance(k) < k or not accepted  # no accepted rule claims to survive a majority
