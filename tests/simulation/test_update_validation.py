"""Issue 12, defect 2: one check (hamrah.core.updates) for every client update, in the simulator and on
the server. In the simulator a NaN/inf update is a failed result with the reason, counted, never
aggregated; before the fix it reached the aggregator and turned the model into NaN."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hamrah.algorithms import FedAvg, LocalSGD
from hamrah.attacks import Attack
from hamrah.core.errors import ProtocolError
from hamrah.core.updates import check_update, update_problem
from hamrah.data import ArrayData, Dataset, federate
from hamrah.models import LogReg
from hamrah.simulation import SimulationConfig, Simulator, seeded

BAD = [float("nan"), float("inf"), -float("inf")]


@settings(max_examples=80, deadline=None)
@given(
    st.lists(
        st.floats(width=32, allow_nan=False, allow_infinity=False, allow_subnormal=False), min_size=1, max_size=20
    ),
    st.integers(0, 19),
    st.sampled_from(BAD + [None]),
    st.sampled_from([torch.float32, torch.float64, torch.float16]),
)
def test_update_problem_names_exactly_the_non_finite_tensor(values, where, bad, dtype):
    a = torch.tensor(values, dtype=torch.float32).to(dtype)
    if dtype == torch.float16:
        a = a.clamp(-6e4, 6e4)  # keep the finite values finite in half precision
    b = torch.zeros(3, dtype=dtype)
    if bad is not None:
        a[where % len(values)] = bad
    problem = update_problem({"b": b, "a": a}, like={"a": a, "b": b})
    if bad is None:
        assert problem is None
    else:
        assert problem == "a holds NaN or infinite values; expected finite numbers"
        with pytest.raises(ProtocolError, match="^update: a holds NaN"):
            check_update({"a": a, "b": b})


def test_update_problem_names_and_shapes():
    like = {"w": torch.zeros(2, 3)}
    assert "missing ['w'], unexpected ['v']" in update_problem({"v": torch.zeros(2, 3)}, like)
    assert update_problem({"w": torch.zeros(3, 2)}, like) == "w has shape (3, 2), expected (2, 3)"


@dataclasses.dataclass(frozen=True)
class _SendNaN:
    value: float = float("nan")

    def poison(self, malicious, benign, rng):
        return [
            dataclasses.replace(r, delta={k: torch.full_like(v, self.value) for k, v in r.delta.items()})
            for r in malicious
        ]


@pytest.mark.parametrize("value", BAD)
def test_simulator_refuses_a_non_finite_client_and_counts_it(mnist, value):
    data = Dataset(
        "m", ArrayData(mnist.train.x[:400], mnist.train.y[:400]), ArrayData(mnist.test.x[:100], mnist.test.y[:100]), 10
    )
    fed = federate(data, "iid", 4, seed=0)
    attack = Attack("nan", frozenset({1}), update_poisoning=_SendNaN(value))
    sim = Simulator(
        seeded(LogReg, 0), fed, FedAvg(1.0, LocalSGD(1, 20, 0.1)), SimulationConfig(rounds=2, seed=0), attack=attack
    )
    result = sim.run()
    assert all(bool(torch.isfinite(v).all()) for v in result.params.values())
    assert sim.refused == 2  # client 1 in both rounds
    assert [r.clients for r in result.history] == [3, 3]  # the refused client is not among those aggregated


@dataclasses.dataclass(frozen=True)
class _Huge:
    """Data poisoning that makes local training diverge: features of 1e30."""

    def poison(self, data, rng):
        return ArrayData(torch.full_like(data.x, 1e30), data.y)


def test_a_refused_client_keeps_its_last_accepted_state(mnist):
    # SCAFFOLD: a client whose training diverged sends a refused (NaN) update and holds a NaN control
    # variate; the state is kept only once its update is accepted (as on devices), so it is not stuck.
    from hamrah.algorithms import Scaffold

    data = Dataset(
        "m", ArrayData(mnist.train.x[:400], mnist.train.y[:400]), ArrayData(mnist.test.x[:100], mnist.test.y[:100]), 10
    )
    fed = federate(data, "iid", 4, seed=0)
    attack = Attack("diverge", frozenset({1}), data_poisoning=_Huge())
    sim = Simulator(
        seeded(LogReg, 0),
        fed,
        Scaffold(1.0, LocalSGD(1, 20, 0.1), num_clients=4),
        SimulationConfig(rounds=2, seed=0),
        attack=attack,
    )
    sim.run()
    assert sim.refused == 2  # client 1's update, both rounds
    assert sorted(sim.client_states) == [0, 2, 3]
    assert all(bool(torch.isfinite(v).all()) for s in sim.client_states.values() for v in s.values())
