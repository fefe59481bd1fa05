"""The aggregate-then-apply contract (hamrah.core.aggregate, hamrah.core.metrics), checked over arbitrary inputs:

- an Aggregate's sums are sum_k w_k x_k whatever the order and however the reports are split over
  Aggregators (streaming shares merge to the same aggregate);
- a "unit" statistic packed with the client's weight sums plainly (SCAFFOLD's control change), an
  "examples" one with the weights;
- a robust rule replaces the mean of the robust statistics only;
- metrics merge with their own reduction (Weighted: the weighted mean; Summed: the sum).
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hamrah.core.aggregate import (
    Accumulator,
    Aggregate,
    Contribution,
    Statistic,
    aggregate_contributions,
    pack,
    robust_mean,
    statistics_template,
    weighted_mean,
)
from hamrah.core.errors import ConfigError, NotEnoughClients
from hamrah.core.metrics import Summed, Weighted, merge_metrics

DELTA = Statistic("delta", robust=True)
CONTROL = Statistic("control", weighting="unit")
COUNT = Statistic("a_norm", shape="scalar", bounded=False)
STATS = (DELTA, CONTROL, COUNT)
MODEL = {"w": torch.zeros(3), "b": torch.zeros(1)}

values = st.floats(-100, 100, allow_nan=False, width=32)
client = st.tuples(
    st.lists(values, min_size=4, max_size=4),
    st.lists(values, min_size=4, max_size=4),
    st.floats(1, 50),
    st.integers(1, 1000),
    values,
)


def _raw(delta, control, a):
    return {
        "delta/w": torch.tensor(delta[:3]),
        "delta/b": torch.tensor(delta[3:]),
        "control/w": torch.tensor(control[:3]),
        "control/b": torch.tensor(control[3:]),
        "a_norm": torch.tensor([a]),
    }


def _contributions(clients):
    return [
        Contribution(i, pack(_raw(d, c, a), STATS, float(n)), float(n), {"train_loss": Weighted.of(loss, n)})
        for i, (d, c, a, n, loss) in enumerate(clients)
    ]


@settings(max_examples=60, deadline=None)
@given(st.lists(client, min_size=1, max_size=8), st.integers(1, 4), st.randoms(use_true_random=False))
def test_sums_are_weighted_for_examples_and_plain_for_unit_statistics_however_split(clients, shares, rnd):
    contribs = _contributions(clients)
    agg = aggregate_contributions(contribs, STATS)
    n = [float(c[3]) for c in clients]
    for j, name in enumerate(["w", "w", "w", "b"]):
        idx = j if name == "w" else 0
        want_delta = sum(w * c[0][j] for w, c in zip(n, clients))
        want_control = sum(c[1][j] for c in clients)  # a plain sum, whatever the weights
        assert float(agg.total(DELTA)[name][idx]) == pytest.approx(want_delta, rel=1e-4, abs=1e-2)
        assert float(agg.total(CONTROL)[name][idx]) == pytest.approx(want_control, rel=1e-4, abs=1e-2)
    assert float(agg.mean(COUNT)["a_norm"][0]) == pytest.approx(
        sum(w * c[2] for w, c in zip(n, clients)) / sum(n), rel=1e-4, abs=1e-3
    )
    assert agg.count == len(clients) and agg.weight == pytest.approx(sum(n))
    want_loss = sum(w * c[4] for w, c in zip(n, clients)) / sum(n)
    assert agg.metric("train_loss") == pytest.approx(want_loss, rel=1e-6, abs=1e-6)
    # streaming: reports dealt at random over `shares` Aggregators, merged in any order: the same sums
    accs = [Accumulator() for _ in range(shares)]
    order = list(contribs)
    rnd.shuffle(order)
    for c in order:
        accs[rnd.randrange(shares)].add(c)
    total = Accumulator()
    for a in accs:
        total.merge(a)
    merged = total.result()
    assert merged.count == agg.count and merged.weight == pytest.approx(agg.weight)
    for k in agg.sums:
        torch.testing.assert_close(merged.sums[k], agg.sums[k], rtol=1e-9, atol=1e-6)


@settings(max_examples=40, deadline=None)
@given(st.lists(client, min_size=1, max_size=6))
def test_a_robust_rule_replaces_only_the_robust_statistics_mean(clients):
    contribs = _contributions(clients)

    def first(values, weights):  # a "rule" whose result is easy to predict: the first client's value
        return dict(values[0])

    mean = robust_mean([c.stats for c in contribs], [c.weight for c in contribs], STATS, first)
    plain = weighted_mean([c.stats for c in contribs], [c.weight for c in contribs])
    torch.testing.assert_close(mean["delta/w"], contribs[0].stats["delta/w"])
    for k in ("control/w", "control/b", "a_norm"):
        torch.testing.assert_close(mean[k], plain[k])
    agg = aggregate_contributions(contribs, STATS, first)
    torch.testing.assert_close(agg.mean(DELTA)["b"], contribs[0].stats["delta/b"], rtol=1e-5, atol=1e-5)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.floats(-1e3, 1e3), st.floats(0, 1e3)), min_size=1, max_size=10),
    st.lists(st.floats(0, 1e3), max_size=10),
)
def test_metrics_merge_with_their_own_reduction(weighted, summed):
    a = {"loss": Weighted(0.0, 0.0), "bytes": Summed(0.0)}
    for x, w in weighted:
        a = merge_metrics(a, {"loss": Weighted.of(x, w)})
    for s in summed:
        a = merge_metrics(a, {"bytes": Summed(s)})
    total_w = sum(w for _, w in weighted)
    if total_w > 0:
        assert a["loss"].value == pytest.approx(sum(x * w for x, w in weighted) / total_w, rel=1e-9, abs=1e-9)
    else:
        assert math.isnan(a["loss"].value)
    assert a["bytes"].value == pytest.approx(sum(summed))


def test_mixed_reductions_and_bad_weights_are_refused_with_the_reason():
    with pytest.raises(ConfigError, match="cannot merge Weighted with Summed"):
        merge_metrics({"x": Weighted.of(1.0, 1.0)}, {"x": Summed(1.0)})
    with pytest.raises(ConfigError, match="metric weight"):
        Weighted.of(1.0, -1.0)
    with pytest.raises(ConfigError, match="statistics weight"):
        pack({"control/w": torch.ones(1)}, (CONTROL,), 0.0)
    with pytest.raises(ConfigError, match="without '/'"):
        Statistic("a/b")
    with pytest.raises(NotEnoughClients):
        aggregate_contributions([], STATS)
    with pytest.raises(NotEnoughClients, match="weight 0"):
        Aggregate({"delta/w": torch.zeros(1)}, 0.0, 0).mean(DELTA)


def test_the_statistics_template_names_every_statistic():
    t = statistics_template(STATS, MODEL)
    assert list(t) == ["delta/w", "delta/b", "control/w", "control/b", "a_norm"]
    assert t["a_norm"].shape == (1,) and t["delta/w"].shape == (3,)


def test_every_seed_stream_tag_is_distinct():
    from hamrah.core.seeds import Stream

    assert len({int(s) for s in Stream}) == len(Stream.__members__)  # an alias would hide a clash
    assert Stream.MALICIOUS != Stream.PIPELINE
