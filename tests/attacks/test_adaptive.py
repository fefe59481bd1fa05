"""Attacks built against the robust rules (min-max, min-sum, IPM, Fang's, FLTrust-adaptive) and DBA:
each crafts what its paper says, and each gets past the rule it was built against where a naive
attack of the same size does not."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hamrah.aggregation import build_aggregator
from hamrah.algorithms import ClientResult
from hamrah.attacks import (
    TARGETED,
    DistributedBackdoor,
    FangKrum,
    FangTrim,
    FLTrustAdaptive,
    InnerProduct,
    MinMax,
    MinSum,
    build_attack,
)
from hamrah.attacks.adaptive import largest_gamma
from hamrah.core.errors import ConfigError
from hamrah.data.federated import ArrayData

D = 30


def _honest(n: int, seed: int = 0, d: int = D, mean: float = 1.0, spread: float = 0.1) -> list[ClientResult]:
    g = torch.Generator().manual_seed(seed)
    base = mean * torch.linspace(-1.0, 1.0, d)
    return [ClientResult(i, {"w": base + spread * torch.randn(d, generator=g)}, 10) for i in range(n)]


def _mal(c: int, d: int = D) -> list[ClientResult]:
    return [ClientResult(100 + i, {"w": torch.zeros(d)}, 10) for i in range(c)]


def _rows(results) -> torch.Tensor:
    return torch.stack([r.delta["w"].double() for r in results])


@settings(max_examples=30, deadline=None)
@given(st.integers(2, 8), st.integers(0, 10_000), st.sampled_from(["std", "unit", "sign"]))
def test_min_max_and_min_sum_stay_within_the_benign_spread(n, seed, kind):
    ben = _honest(n, seed)
    x = _rows(ben)
    m = _rows(MinMax(kind).poison(_mal(2), ben, None))[0]
    assert float((x - m).norm(dim=1).max()) <= float(torch.cdist(x, x).max()) * (1 + 1e-5) + 1e-6
    s = _rows(MinSum(kind).poison(_mal(2), ben, None))[0]
    limit = float((torch.cdist(x, x) ** 2).sum(1).max())
    assert float(((x - s).norm(dim=1) ** 2).sum()) <= limit * (1 + 1e-5) + 1e-6


def test_min_max_moves_against_the_mean_as_far_as_allowed():
    ben = _honest(8)
    x = _rows(ben)
    mu = x.mean(0)
    m = _rows(MinMax("unit").poison(_mal(2), ben, None))[0]
    # gamma > 0 along -mu/||mu||, and a bit more would break the condition
    shift = m - mu
    assert float(shift @ mu) < 0 and float(shift.norm()) > 0.5 * float(torch.cdist(x, x).max())
    bigger = mu + 1.01 * shift
    assert float((x - bigger).norm(dim=1).max()) > float(torch.cdist(x, x).max())


def test_largest_gamma_finds_the_boundary():
    assert abs(largest_gamma(lambda g: g <= 3.3) - 3.3) < 1e-4
    assert largest_gamma(lambda g: False) == 0.0


def test_ipm_sends_minus_epsilon_times_the_benign_mean():
    ben = _honest(5)
    out = _rows(InnerProduct(0.5).poison(_mal(3), ben, None))
    mu = _rows(ben).mean(0)
    assert torch.allclose(out, (-0.5 * mu).expand(3, D).to(out.dtype), atol=1e-6)
    assert float(out[0] @ mu) < 0


def test_fang_trim_sends_values_beyond_the_benign_extreme_against_the_direction():
    ben = _honest(8)
    x = _rows(ben)
    up = x.mean(0) > 0
    out = _rows(FangTrim().poison(_mal(3), ben, np.random.default_rng(0)))
    assert bool((out[:, up] <= x.min(0).values[up] + 1e-6).all())
    assert bool((out[:, ~up] >= x.max(0).values[~up] - 1e-6).all())
    assert not torch.equal(out[0], out[1])  # each attacker its own draw
    # it drags the trimmed mean (beta = 0.2 of 11 trims 2, fewer than the 3 attackers) against mu
    deltas = [r.delta for r in ben] + [{"w": row.float()} for row in out]
    trimmed = build_aggregator("trimmed_mean", beta=0.2)(deltas, [1.0] * 11)["w"].double()
    honest = build_aggregator("trimmed_mean", beta=0.2)([r.delta for r in ben], [1.0] * 8)["w"].double()
    assert float((trimmed - honest) @ x.mean(0)) < 0


def test_fang_krum_is_selected_by_krum_and_reverses_the_direction():
    # Fang et al.'s setting: local updates whose spread is large next to their mean (SGD noise)
    ben = _honest(8, mean=0.05, spread=0.3)
    mal = FangKrum().poison(_mal(2), ben, None)
    deltas = [r.delta for r in ben] + [r.delta for r in mal]
    out = build_aggregator("krum", f=2)(deltas, [1.0] * 10)["w"]
    assert torch.equal(out, mal[0].delta["w"])  # Krum picked the crafted update
    mu = _rows(ben).mean(0)
    assert float(out.double() @ mu) < 0
    # the crafted update is -lambda * sign(mu)
    assert torch.allclose(out.double().abs(), out.double().abs()[0].expand(D))


def test_fltrust_adaptive_keeps_its_trust_and_turns_the_aggregate():
    ben = _honest(6)
    mu = _rows(ben).mean(0)
    mal = FLTrustAdaptive(0.7).poison(_mal(4), ben, None)
    m = _rows(mal)[0]
    assert abs(float(m @ mu / (m.norm() * mu.norm())) - 0.7) < 1e-6
    rule = build_aggregator("fltrust").with_reference({"w": mu.float()})
    deltas = [r.delta for r in ben] + [r.delta for r in mal]
    adaptive = rule(deltas, [1.0] * 10)["w"].double()
    flipped = rule([r.delta for r in ben] + [{"w": -r.delta["w"]} for r in ben[:4]], [1.0] * 10)["w"].double()
    cos = lambda a: float(a @ mu / (a.norm() * mu.norm()))
    # a sign flip gets trust 0 and changes nothing; the adaptive attack keeps trust and turns the result
    assert cos(flipped) > 0.99 and cos(adaptive) < 0.98


def test_dba_each_attacker_stamps_its_own_part_and_success_uses_the_whole_trigger():
    atk = build_attack("dba", frozenset({4, 5}), target=0, fraction=1.0)
    data = ArrayData(torch.zeros(3, 1, 28, 28), torch.tensor([3, 5, 7]))
    a = atk.poison_data(4, data, np.random.default_rng(0)).x  # part 0
    b = atk.poison_data(5, data, np.random.default_rng(0)).x  # part 1
    assert float(a.sum()) == 3 * 4 and float(b.sum()) == 3 * 4 and not torch.equal(a, b)
    assert float((a + b).clamp(max=1).sum()) == 3 * 8
    whole = atk.success_data(ArrayData(torch.zeros(4, 1, 28, 28), torch.tensor([0, 1, 2, 3])))
    assert len(whole) == 3 and float(whole.x[0].sum()) == 16 and whole.y.tolist() == [0, 0, 0]
    assert "dba" in TARGETED


@pytest.mark.parametrize(
    "name,params,message",
    [
        ("min_max", {"perturbation": "up"}, "perturbation = 'up': expected one of std, unit, sign"),
        ("min_sum", {"gamma_init": -1.0}, r"gamma_init = -1.0: expected a number in \(0, inf\)"),
        ("ipm", {"epsilon": math.nan}, "epsilon = nan"),
        ("fltrust_adaptive", {"cosine": 1.5}, r"cosine = 1.5: expected a number in \(0, 1\]"),
        ("fang_trim", {"b": 0.5}, r"b = 0.5: expected a number in \(1, inf\)"),
        ("dba", {"target": 0, "parts": 0}, "parts = 0: expected an integer >= 1"),
        ("dba", {"target": 12}, "target = 12"),
    ],
)
def test_bad_parameters_are_refused_with_the_reason(name, params, message):
    with pytest.raises(ConfigError, match=message):
        build_attack(name, frozenset({1}), **params)


def test_a_dba_trigger_that_does_not_fit_is_refused():
    with pytest.raises(ConfigError, match="does not fit 8x8 images"):
        DistributedBackdoor(target=0, size=6).stamp(torch.zeros(1, 1, 8, 8))
