"""A round whose new model is not finite is refused in the simulator as on the server: finite updates
whose sum overflows (3e38 twice in float32) leave the model as it was instead of poisoning every later
round."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from hamrah.algorithms import FedAvg, LocalSGD
from hamrah.core.params import max_abs_diff
from hamrah.data.federated import ArrayData, Dataset, FederatedDataset
from hamrah.simulation import SimulationConfig, Simulator


def _clients() -> FederatedDataset:
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(40, 6, generator=g), torch.randint(0, 2, (40,), generator=g)
    test = ArrayData(torch.rand(10, 6, generator=g), torch.randint(0, 2, (10,), generator=g))
    return FederatedDataset(Dataset("tiny", ArrayData(x, y), test, 2), tuple(np.arange(40).reshape(4, 10)), "hand")


class _Overflow:
    """Clients 0 and 1 send ``value`` in every coordinate: finite, each passes the update check."""

    def __init__(self, value: float):
        self.value = value

    def is_malicious(self, client_id: int) -> bool:
        return client_id < 2

    def poison_data(self, client_id, data, rng):
        return data

    def poison_updates(self, malicious, benign, rng):
        return [
            dataclasses.replace(r, delta={k: torch.full_like(v, self.value) for k, v in r.delta.items()})
            for r in malicious
        ]


def _sim(attack) -> Simulator:
    torch.manual_seed(0)
    config = SimulationConfig(rounds=3, workers=1, batched=False)
    return Simulator(
        nn.Sequential(nn.Flatten(), nn.Linear(6, 2)),
        _clients(),
        FedAvg(1.0, LocalSGD(1, 5, 0.1)),
        config,
        attack=attack,
    )


@settings(max_examples=10, deadline=None)
@given(st.floats(1e38, 3.4e38))
def test_a_sum_that_overflows_is_refused_and_the_model_kept(value):
    sim = _sim(_Overflow(value))
    start = {k: v.clone() for k, v in sim.params.items()}
    result = sim.run()
    assert all(bool(torch.isfinite(v).all()) for v in result.params.values())
    assert sim.refused_aggregates == 3 and max_abs_diff(result.params, start) == 0  # every round refused
    assert all(r.clients == 0 for r in result.history) and not math.isnan(result.history[-1].test_loss)


def test_large_but_summable_updates_are_applied():
    sim = _sim(_Overflow(1e30))
    sim.run()
    assert sim.refused_aggregates == 0
