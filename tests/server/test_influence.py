"""Bounded influence: one report cannot move the model past the bound, whatever num_examples and
values it claims; a non-finite aggregate is refused and its round repeated, never committed.

The review's two cases (delta = -params with num_examples = 1e9; 3e38 everywhere) fail on the code
before bounded influence: the first committed a model near zero (accuracy 0.79 -> 0.09), the second
committed 3e38 values.
"""

from __future__ import annotations

import asyncio
import json
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.server.driver import make_coordinator, one_round, open_round, select, send

from hamrah.algorithms.local import evaluate
from hamrah.core.errors import ConfigError, NotEnoughClients, ProtocolError
from hamrah.privacy.mechanisms import l2_norm
from hamrah.server.influence import AdaptiveClip, InfluenceBound, check_finite, check_metrics
from hamrah.transport.proto import fl_pb2 as pb

finite = st.floats(allow_nan=False, allow_infinity=False, width=32)


@settings(max_examples=60, deadline=None)
@given(st.lists(finite, min_size=1, max_size=40), st.floats(1e-3, 1e3), st.integers(1, 10**9), st.integers(1, 10**4))
def test_a_bounded_delta_never_exceeds_the_clip_and_keeps_its_direction(values, clip, n, cap):
    bound = InfluenceBound(cap, clip)
    delta = {"w": torch.tensor(values, dtype=torch.float32)}
    out, norm = bound.bound(delta)
    assert math.isfinite(norm)
    after = l2_norm(out)
    assert after <= clip * (1 + 1e-5)
    assert torch.isfinite(out["w"]).all()
    if norm <= clip:
        assert torch.equal(out["w"], delta["w"])
    elif norm > 0:  # same direction: a non-negative multiple
        assert float((out["w"].double() * delta["w"].double()).sum()) >= 0
    assert 1 <= bound.weight(n) <= cap and bound.weight(n) <= n


@settings(max_examples=60, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["accuracy", "loss", "train_loss", "duration_s", "other"]),
        st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([1e200, 1e201, 1e308, 1e7])),
        max_size=5,
    )
)
def test_metrics_out_of_range_are_refused_in_range_kept(metrics):
    ranges = {
        "accuracy": (0, 1),
        "loss": (0, 1e200),  # a weighted sum of losses stays finite
        "train_loss": (0, 1e200),
        "duration_s": (0, 1e7),
        "other": (-math.inf, math.inf),
    }
    ok = all(math.isfinite(v) and ranges[k][0] <= v <= ranges[k][1] for k, v in metrics.items())
    if ok:
        assert check_metrics(metrics) == metrics
    else:
        with pytest.raises(ProtocolError, match="metrics: .* expected a finite number in"):
            check_metrics(metrics)


def test_check_finite_names_the_tensor():
    with pytest.raises(ProtocolError, match="fc2.bias holds NaN"):
        check_finite({"fc1.weight": torch.zeros(2), "fc2.bias": torch.tensor([1.0, math.inf])}, "model")


def test_impossible_bounds_are_config_errors():
    with pytest.raises(ConfigError, match="max_weight"):
        InfluenceBound(0, 1.0)
    with pytest.raises(ConfigError, match="clip"):
        InfluenceBound(10, math.inf)


def _distance(a, b) -> float:
    return l2_norm({k: a[k].double() - b[k].double() for k in a})


def _zeros(coord):
    return {k: torch.zeros_like(v) for k, v in coord.params.items()}


def _honest(coord, seed: int):
    g = torch.Generator().manual_seed(seed)
    return {k: 1e-3 * torch.randn(v.shape, generator=g) for k, v in coord.params.items()}


def _without_attacker(before, honest: list, total_weight: float, w: float = 600):
    return {k: before[k] + sum(w * h[k] for h in honest) / total_weight for k in before}


@pytest.mark.parametrize("scale", [1.0, 10.0])
def test_weight_inflation_with_minus_params_moves_the_model_at_most_the_bound(tmp_path, scale):
    """The review's case (scale 1): 9 honest reports (600 examples each) and one delta = -params with
    num_examples = 1e9. Unbounded, the new model is ~0 and accuracy falls from 0.79 to 0.09."""
    coord = make_coordinator(tmp_path, goal_count=10, over_selection=1.0, min_reports=10)
    _, base_acc = evaluate(coord.model, coord.params, coord.test_data, coord.ignore_index)
    honest = [_honest(coord, i) for i in range(9)]

    async def go():
        runner = asyncio.ensure_future(coord.run())
        await open_round(coord, 1)
        before = {k: v.clone() for k, v in coord.params.items()}
        reports = {f"honest{i}": (h, 600) for i, h in enumerate(honest)}
        reports["mallory"] = ({k: -scale * v for k, v in coord.params.items()}, 10**9)
        await one_round(coord, 1, reports)
        await runner
        return before

    before = asyncio.run(go())
    rec = coord.store.committed_rounds()[0]
    assert coord.max_weight == 600  # the largest client of the 100-client MNIST shards partition
    assert rec["weight_capped"] == 1 and rec["clipped"] == 1
    # the attacker's pull: its capped weight share times the clip bound (2x the median honest norm)
    pull = _distance(coord.params, _without_attacker(before, honest, 10 * 600))
    assert pull <= 600 / (10 * 600) * rec["clip_norm"] * (1 + 1e-3)
    assert rec["clip_norm"] <= 2 * max(l2_norm(h) for h in honest) * (1 + 1e-6)
    assert rec["test_accuracy"] >= base_acc - 0.02  # unbounded: 0.09


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(1e-3, 1e3), min_size=1, max_size=20), st.data())
def test_the_adaptive_bound_follows_the_honest_majority(honest, data):
    bad = data.draw(st.lists(st.floats(0, 1e38), max_size=(len(honest) - 1) // 2))
    order = data.draw(st.permutations(honest + bad))
    clip = AdaptiveClip(2.0)
    for norm in order:
        clip.observe(norm)
    # a minority can move the bound neither below nor above the honest norms
    assert 2.0 * min(honest) * (1 - 1e-9) <= clip.clip() <= 2.0 * max(honest) * (1 + 1e-9)
    assert clip.ready() == (len(order) >= 3)
    assert AdaptiveClip(2.0, fixed=1.5).clip() == 1.5


def test_huge_finite_values_are_bounded_and_training_goes_on(tmp_path):
    """The review's case: 3e38 everywhere. Unbounded it was committed and every later honest update was
    refused; bounded, round 1 moves at most the bound and round 2 accepts honest updates."""
    coord = make_coordinator(tmp_path, rounds=2, goal_count=4, over_selection=1.0, min_reports=4)
    honest = [_honest(coord, i) for i in range(3)]

    async def go():
        runner = asyncio.ensure_future(coord.run())
        await open_round(coord, 1)
        before = {k: v.clone() for k, v in coord.params.items()}
        huge = {k: torch.full_like(v, 3e38) for k, v in coord.params.items()}
        await one_round(
            coord, 1, {"a": (honest[0], 600), "mallory": (huge, 600), "b": (honest[1], 600), "c": (honest[2], 600)}
        )
        after_1 = {k: v.clone() for k, v in coord.params.items()}
        await one_round(coord, 2, {d: (_honest(coord, 10 + i), 600) for i, d in enumerate("abcd")})
        await runner
        return before, after_1

    before, after_1 = asyncio.run(go())
    recs = coord.store.committed_rounds()
    assert [r["round"] for r in recs] == [1, 2] and recs[1]["reported"] == 4
    assert all(bool(torch.isfinite(v).all()) for v in coord.params.values())
    assert _distance(after_1, _without_attacker(before, honest, 4 * 600)) <= 0.25 * recs[0]["clip_norm"] * (1 + 1e-3)


def test_a_non_finite_aggregate_is_refused_and_the_round_repeated(tmp_path, caplog):
    """With bounds explicitly off and a server learning rate of 2, two 3e38 reports make the new model
    infinite: the round is refused, repeated, and the committed model is finite."""
    algorithm = {
        "name": "fedavgm",
        "client_fraction": 0.1,
        "local_epochs": 1,
        "batch_size": 10,
        "lr": 0.1,
        "server_lr": 2.0,
        "beta1": 0.0,
    }
    coord = make_coordinator(
        tmp_path, algorithm=algorithm, goal_count=2, over_selection=1.0, min_reports=2, bounded_influence=False
    )

    async def go():
        runner = asyncio.ensure_future(coord.run())
        huge = {k: torch.full_like(v, 3e38) for k, v in coord.params.items()}
        await one_round(coord, 1, {"m1": (huge, 10**9), "m2": (huge, 10**9)})
        while coord.refused_aggregates == 0:
            await asyncio.sleep(0.005)
        await one_round(coord, 1, {"a": (_zeros(coord), 600), "b": (_zeros(coord), 600)})
        await runner

    with caplog.at_level("WARNING", logger="hamrah.server"):
        asyncio.run(go())
    assert "bounded_influence = false" in caplog.text
    assert "refused the aggregate" in caplog.text and "NaN or infinite" in caplog.text
    recs = coord.store.committed_rounds()
    assert [r["round"] for r in recs] == [1] and recs[0]["attempts"] == 2
    assert all(bool(torch.isfinite(v).all()) for v in coord.params.values())
    coord.store.close()


def test_bad_evaluate_metrics_and_train_loss_are_refused(tmp_path):
    coord = make_coordinator(tmp_path, goal_count=2, over_selection=1.0, min_reports=2, eval_devices=1)

    async def go():
        runner = asyncio.ensure_future(coord.run())
        await open_round(coord, 1)
        tasks = await select(coord, ["a", "b", "c"])
        seen = []
        # the evaluate report first: the two training reports meet the goal and close reporting at once
        for d, t in sorted(tasks.items(), key=lambda dt: dt[1].kind != pb.EVALUATE):
            if t.kind == pb.EVALUATE:
                for bad in ({"loss": 0.3, "accuracy": 1e300}, {"loss": -5.0, "accuracy": 0.5}, {"loss": 0.1}):
                    with pytest.raises(ProtocolError, match="metrics") as err:
                        send(coord, d, t, None, 10, bad)
                    seen.append(str(err.value))
                send(coord, d, t, None, 10, {"loss": 0.3, "accuracy": 0.9})
            else:
                with pytest.raises(ProtocolError, match="train_loss"):
                    send(coord, d, t, _zeros(coord), 10, {"train_loss": -1.0})
                send(coord, d, t, _zeros(coord), 10, {"train_loss": 0.4})
        await runner
        return seen

    seen = asyncio.run(go())
    assert len(seen) == 3
    text = (tmp_path / "metrics.jsonl").read_text()
    rec = json.loads(text)
    assert rec["device_accuracy"] == 0.9
    coord.store.close()


def test_rounds_abandoned_past_the_cap_stop_with_a_clear_error(tmp_path):
    coord = make_coordinator(tmp_path, goal_count=2, over_selection=1.0, selection_timeout_s=0.05, max_round_attempts=3)
    with pytest.raises(NotEnoughClients, match=r"round 1: abandoned 3 times \(server.max_round_attempts = 3\)"):
        asyncio.run(coord.run())
    assert coord.finished and coord.store.committed_rounds() == []
    coord.store.close()
