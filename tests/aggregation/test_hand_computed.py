"""Small cases worked out by hand, the flattening round trip, and the refusals with their reasons."""

from __future__ import annotations

import pytest
import torch

from hamrah.aggregation import (
    Bulyan,
    Krum,
    Median,
    TrimmedMean,
    WeightedMean,
    build_aggregator,
    flatten,
    krum_scores,
    unflatten,
)
from hamrah.core.errors import ConfigError, NotEnoughClients


def _scalars(*vals):
    return [{"w": torch.tensor([float(v)])} for v in vals]


def test_flatten_round_trip_keeps_names_shapes_and_order():
    d = {"a": torch.arange(6.0).reshape(2, 3), "b": torch.tensor([7.0]), "c": torch.ones(2, 1, 2)}
    x, spec = flatten([d, d])
    assert x.shape == (2, 11)
    back = unflatten(x[1], spec)
    assert list(back) == ["a", "b", "c"] and all(torch.equal(back[k], d[k]) for k in d)


def test_weighted_mean():
    out = WeightedMean()(_scalars(1, 4), [3, 1])
    assert float(out["w"]) == pytest.approx((3 * 1 + 4) / 4)


def test_median_odd_and_even():
    assert float(Median()(_scalars(5, -1, 3), [1, 1, 1])["w"]) == 3.0
    assert float(Median()(_scalars(5, -1, 3, 10), [1, 1, 1, 1])["w"]) == 4.0


def test_median_is_coordinate_wise():
    deltas = [{"w": torch.tensor([1.0, 30.0])}, {"w": torch.tensor([2.0, 10.0])}, {"w": torch.tensor([9.0, 20.0])}]
    assert Median()(deltas, [1, 1, 1])["w"].tolist() == [2.0, 20.0]


def test_trimmed_mean_drops_floor_beta_k_from_each_end():
    # K = 5, beta = 0.2: drop 1 each side of (-100, 1, 2, 6, 100) -> mean(1, 2, 6) = 3
    assert float(TrimmedMean(0.2)(_scalars(100, 1, -100, 6, 2), [1] * 5)["w"]) == pytest.approx(3.0)
    # beta = 0.39 with K = 5: floor(1.95) = 1, same
    assert float(TrimmedMean(0.39)(_scalars(100, 1, -100, 6, 2), [1] * 5)["w"]) == pytest.approx(3.0)


def test_krum_scores_by_hand():
    # K = 5, f = 1: each score sums the K - f - 2 = 2 smallest squared distances to others
    x = torch.tensor([[0.0], [1.0], [3.0], [4.0], [10.0]])
    assert krum_scores(x, 1).tolist() == pytest.approx([1 + 9, 1 + 4, 1 + 4, 1 + 9, 36 + 49], abs=1e-5)
    out = Krum(f=1)(_scalars(0, 1, 3, 4, 10), [1] * 5)  # ties 1 and 3: either is a valid Krum choice
    assert float(out["w"]) in (1.0, 3.0)
    assert float(Krum(f=1, m=2)(_scalars(0, 1, 3, 4, 10), [1] * 5)["w"]) == pytest.approx(2.0)


def test_bulyan_by_hand():
    # K = 7, f = 1: theta = 5 picked by repeated Krum (the outlier 90 and one more left out),
    # then beta = 3 closest to the median averaged
    vals = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 90.0)
    out = float(Bulyan(f=1)(_scalars(*vals), [1] * 7)["w"])
    assert 0.15 < out < 0.35


@pytest.mark.parametrize(
    "name,params,cohort,reason",
    [
        ("krum", {"f": 3}, 8, "Krum with f = 3 (K > 2f + 2) needs at least 9"),
        ("multi_krum", {"f": 2, "m": 6}, 7, "m = 6 averages more than the K - f = 5"),
        ("bulyan", {"f": 2}, 10, "Bulyan with f = 2 (K >= 4f + 3) needs at least 11"),
        ("trimmed_mean", {"beta": 0.5}, 4, "beta = 0.5 trims every one of 4 clients"),
    ],
)
def test_check_refuses_a_cohort_that_cannot_work(name, params, cohort, reason):
    agg = build_aggregator(name, **params)
    with pytest.raises(ConfigError, match=reason.replace("(", r"\(").replace(")", r"\)").replace("+", r"\+")):
        agg.check(cohort)
    agg.check(cohort + 1)


@pytest.mark.parametrize(
    "name,params,message",
    [
        ("norm_bound", {"bound": -1.0}, "bound = -1.0: expected a number in \\(0, inf\\)"),
        ("norm_bound", {"bound": 0.0}, "bound = 0.0"),
        ("trimmed_mean", {"beta": 0.6}, "beta = 0.6"),
        ("krum", {"f": -1}, "f = -1: expected an integer >= 0"),
        ("krum", {}, "missing parameter f"),
        ("median", {"beta": 0.1}, "unknown parameter 'beta'"),
        ("foolsgold", {}, "unknown aggregator 'foolsgold'"),
        ("fltrust", {"root_size": 0}, "root_size = 0: expected an integer >= 1"),
    ],
)
def test_bad_parameters_are_refused(name, params, message):
    with pytest.raises(ConfigError, match=message):
        build_aggregator(name, **params)


def test_weights_must_match_and_be_valid():
    with pytest.raises(ConfigError, match="got 1 weights for 2 deltas"):
        WeightedMean()(_scalars(1, 2), [1])
    with pytest.raises(ConfigError, match="expected finite numbers >= 0"):
        Median()(_scalars(1, 2), [1, -1])


def test_too_few_deltas_at_aggregation_time():
    with pytest.raises(NotEnoughClients, match="needs 5"):
        Krum(f=1)(_scalars(1, 2, 3), [1, 1, 1])
    with pytest.raises(NotEnoughClients):
        WeightedMean()([], [])
