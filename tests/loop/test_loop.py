"""The shared round loop without a driver: a fake runner and arbitrary plans, budgets and aggregates."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hamrah.algorithms import FedAvg, LocalSGD, Scaffold
from hamrah.core.aggregate import Aggregate
from hamrah.core.errors import ConfigError, ProtocolError
from hamrah.core.records import RoundRecord
from hamrah.loop import AggregateRefused, End, RoundLoop, RunPlan, drive

ALGO = FedAvg(1.0, LocalSGD(1, 10, 0.1))


class FakeRunner:
    """Each round's aggregate moves w by ``steps[r]`` (NaN: refused; None: nothing reported); the
    scored accuracy of round r is ``accuracy[r]``; the budget allows ``budget`` rounds."""

    def __init__(self, steps, accuracy, budget=None):
        self.steps, self.accuracy, self.budget = steps, accuracy, budget
        self.ran, self.refused, self.finished, self.scored = [], [], [], {}

    def refusal(self, round_idx):
        return None if self.budget is None or round_idx <= self.budget else f"budget of {self.budget} rounds spent"

    def run_round(self, round_idx):
        self.ran.append(round_idx)
        step = self.steps[round_idx - 1]
        return None if step is None else Aggregate({"delta/w": torch.tensor([step], dtype=torch.float64)}, 1.0, 1)

    def aggregate_refused(self, round_idx, error):
        self.refused.append(round_idx)

    def finish_round(self, round_idx, aggregate, scored):
        self.finished.append((round_idx, aggregate is not None))
        if scored is None:
            return None
        self.scored[round_idx] = float(scored["w"][0])
        return RoundRecord(round_idx, self.accuracy[round_idx - 1])


STEP = st.one_of(st.none(), st.just(math.nan), st.floats(-4, 4, allow_nan=False))


@settings(max_examples=150, deadline=None)
@given(
    rounds=st.integers(1, 12),
    eval_every=st.integers(1, 5),
    target=st.one_of(st.none(), st.floats(0.1, 0.9)),
    stop=st.booleans(),
    budget=st.one_of(st.none(), st.integers(0, 12)),
    data=st.data(),
)
def test_drive_runs_the_rounds_the_plan_and_budget_allow_and_keeps_the_model_on_refusal(
    rounds, eval_every, target, stop, budget, data
):
    steps = data.draw(st.lists(STEP, min_size=rounds, max_size=rounds))
    accuracy = data.draw(st.lists(st.floats(0, 1), min_size=rounds, max_size=rounds))
    plan = RunPlan(rounds, eval_every=eval_every, target_accuracy=target, stop_at_target=stop)
    runner = FakeRunner(steps, accuracy, budget)
    loop = RoundLoop(ALGO, plan, {"w": torch.zeros(1)}, ALGO.init_server_state({}), budget=runner)
    after: list[int] = []
    records: list[RoundRecord] = []
    end = drive(loop, runner, records.append, after.append)

    # the rounds run: 1.. until the last, the budget, or the first scored round at the target
    expected, why = [], "rounds"
    for r in range(1, rounds + 1):
        if budget is not None and r > budget:
            why = "budget"
            break
        expected.append(r)
        if plan.evaluates(r) and plan.reached(accuracy[r - 1]):
            why = "target"
            break
    assert runner.ran == after == [r for r, _ in runner.finished] == expected
    assert end is not None and end.reason == why and loop.ended == end and loop.due() is None
    assert [rec.round for rec in records] == [r for r in expected if plan.evaluates(r)] == sorted(runner.scored)
    # the model moved by every step that was finite, never by a refused one
    w = 0.0
    for r in expected:
        step = steps[r - 1]
        refused = step is not None and math.isnan(step)
        assert (r in runner.refused) == refused
        assert dict(runner.finished)[r] == (step is not None and not refused)  # only an adopted aggregate
        w += 0.0 if step is None or refused else step
        if r in runner.scored:
            assert runner.scored[r] == pytest.approx(w, abs=1e-5)  # what was scored is the round's model
    assert float(loop.params["w"][0]) == pytest.approx(w, abs=1e-5) and loop.last_round == len(expected)


def test_apply_refuses_a_server_state_that_is_not_finite_and_adopts_nothing():
    algo = Scaffold(1.0, LocalSGD(1, 10, 0.1), num_clients=4)
    params = {"w": torch.zeros(2)}
    loop = RoundLoop(algo, RunPlan(3), params, algo.init_server_state(params))
    bad = Aggregate({"delta/w": torch.zeros(2, dtype=torch.float64), "control/w": torch.tensor([math.inf, 0.0])}, 1, 1)
    with pytest.raises(AggregateRefused, match=r"round 1's server state: .* NaN or infinite") as err:
        loop.apply(1, bad)
    assert isinstance(err.value, ProtocolError)  # the server's commit refuses it as a bad message
    assert loop.params is params and loop.last_round == 0


def test_commit_takes_rounds_in_order_and_a_resumed_loop_goes_on_after_its_last_round():
    loop = RoundLoop(ALGO, RunPlan(3), {"w": torch.zeros(1)}, None, last_round=1)
    assert loop.due() == 2
    with pytest.raises(ValueError, match="the loop expects round 2"):
        loop.commit(3, None)
    assert loop.commit(2, None) is None and loop.commit(3, None) == End("rounds")
    assert RoundLoop(ALGO, RunPlan(3), {}, None, last_round=3).due() is None  # a finished run starts nothing


@pytest.mark.parametrize("field, value", [("rounds", 0), ("eval_every", 0)])
def test_run_plan_refuses_what_no_run_can_honour(field, value):
    with pytest.raises(ConfigError, match=f"run.{field} = 0: expected an integer >= 1"):
        RunPlan(**{"rounds": 5, field: value})
