"""Issue 12, defects 1 and 2: one huge or non-finite client must not capture or poison a robust rule.

Each test here failed on the code before the fix (Krum/Multi-Krum picked the 1e18 attacker through NaN
distances; geomed, norm_bound and FLTrust returned NaN for one NaN/inf client, FLTrust also for 3e38).
"""

from __future__ import annotations

import pytest
import torch

from hamrah.aggregation import build_aggregator

D_2NN = 784 * 200 + 200 + 200 * 200 + 200 + 200 * 10 + 10  # 199,210 parameters: the review's 2NN


def _review_cohort(bad: float, k: int = 10, d: int = D_2NN) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    rows = [{"w": 0.01 * torch.randn(d, generator=g)} for _ in range(k - 1)]
    return rows + [{"w": torch.full((d,), bad)}]


@pytest.mark.parametrize("name,params", [("krum", {"f": 1}), ("multi_krum", {"f": 1, "m": 5}), ("bulyan", {"f": 1})])
def test_a_1e18_client_is_never_selected(name, params):
    deltas = _review_cohort(1e18)
    out = build_aggregator(name, **params)(deltas, [1.0] * len(deltas))["w"]
    assert bool(torch.isfinite(out).all())
    assert float(out.abs().max()) < 1.0  # honest values are ~0.01; the attacker's 1e18 is not in it


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize(
    "name,params",
    [
        ("krum", {"f": 1}),
        ("multi_krum", {"f": 1, "m": 5}),
        ("bulyan", {"f": 1}),
        ("median", {}),
        ("trimmed_mean", {"beta": 0.2}),
        ("geomed", {}),
        ("norm_bound", {"bound": 1.0}),
    ],
)
def test_one_non_finite_client_leaves_the_result_finite(name, params, bad):
    deltas = _review_cohort(bad, d=50)
    deltas[-1]["w"][3:] = 0.0  # a single bad coordinate is enough
    out = build_aggregator(name, **params)(deltas, [1.0] * len(deltas))["w"]
    assert bool(torch.isfinite(out).all())
    assert float(out.abs().max()) < 1.0


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), 3e38])
@pytest.mark.parametrize("ref_value", [0.01, 1.0])
def test_fltrust_one_non_finite_or_huge_client(bad, ref_value):
    deltas = _review_cohort(bad, d=50)
    ref = {"w": ref_value * torch.ones(50)}
    out = build_aggregator("fltrust").with_reference(ref)(deltas, [1.0] * len(deltas))["w"]
    assert bool(torch.isfinite(out).all())
    assert float(out.norm()) <= float(ref["w"].norm()) * (1 + 1e-5)


def test_every_client_non_finite_is_not_enough_clients():
    from hamrah.core.errors import NotEnoughClients

    deltas = [{"w": torch.full((4,), float("nan"))} for _ in range(3)]
    for name in ("median", "geomed", "norm_bound"):
        with pytest.raises(NotEnoughClients, match="finite"):
            build_aggregator(name, **({"bound": 1.0} if name == "norm_bound" else {}))(deltas, [1, 1, 1])
