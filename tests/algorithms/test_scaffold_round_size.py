"""SCAFFOLD with more reports per round than its population N is refused where the config sets both (the
server's goal or its sites against data.num_clients, the simulator's cohort against num_clients), not in
the first round; the in-round refusal of such an aggregate stays as the backstop."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tests.system.harness import experiment, make_setup
from torch import nn

from hamrah.algorithms import LocalSGD, Scaffold
from hamrah.core.aggregate import Aggregate
from hamrah.core.errors import ConfigError
from hamrah.data.federated import ArrayData, Dataset, FederatedDataset
from hamrah.experiments.serve import server_setup
from hamrah.server.config import server_config
from hamrah.simulation import SimulationConfig, Simulator, seeded

SCAFFOLD = {"name": "scaffold", "client_fraction": 0.5, "local_epochs": 1, "batch_size": 10, "lr": 0.1}


def test_a_server_goal_above_the_population_is_refused_when_the_setup_is_built(tmp_path):
    exp = experiment(rounds=1, num_clients=10, partition="iid", algorithm=SCAFFOLD)
    with pytest.raises(ConfigError) as e:
        make_setup(tmp_path, exp, devices=0, goal_count=12)
    assert str(e.value).startswith("scaffold: server.goal_count = 12 reports per round, but the population N")
    assert "is 10" in str(e.value) and "expected at most 10 reports per round" in str(e.value)
    setup, _, _ = make_setup(tmp_path, exp, devices=0, goal_count=10)  # at N: accepted
    assert setup.goal == 10


def test_cross_silo_sites_above_the_population_are_refused(tmp_path):
    exp = experiment(rounds=1, num_clients=3, partition="iid", algorithm=SCAFFOLD)
    silo = {"mode": "cross_silo", "test_set": False, "sites": 4}
    with pytest.raises(ConfigError, match=r"scaffold: 4 sites \(server.sites, .*\) give 4 reports per round.* is 3"):
        server_setup(exp, server_config(silo))
    assert server_setup(exp, server_config({**silo, "sites": 3})).goal == 3


def _clients(n: int) -> FederatedDataset:
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(4 * n, 6, generator=g), torch.randint(0, 3, (4 * n,), generator=g)
    test = ArrayData(torch.rand(8, 6, generator=g), torch.randint(0, 3, (8,), generator=g))
    parts = tuple(np.arange(4 * i, 4 * i + 4) for i in range(n))
    return FederatedDataset(Dataset("tiny", ArrayData(x, y), test, 3), parts, "hand")


def test_a_simulator_cohort_above_n_is_refused_when_it_is_built():
    model = seeded(lambda: nn.Sequential(nn.Linear(6, 3)), 0)
    algo = Scaffold(0.5, LocalSGD(1, 4, 0.1), num_clients=3)  # N = 3, but 10 clients, 5 per round
    with pytest.raises(ConfigError, match=r"client_fraction = 0.5 of 10 clients gives 5 reports per round.* is 3"):
        Simulator(model, _clients(10), algo, SimulationConfig(rounds=1, workers=1))
    Simulator(model, _clients(6), algo, SimulationConfig(rounds=1, workers=1))  # 3 per round: accepted


def test_the_in_round_refusal_stays_as_the_backstop():
    algo = Scaffold(1.0, LocalSGD(1, 10, 0.1), num_clients=2)
    params = {"w": torch.zeros(2)}
    sums = {"delta/w": torch.zeros(2, dtype=torch.float64), "control/w": torch.zeros(2, dtype=torch.float64)}
    with pytest.raises(ConfigError, match="3 clients reported but the population N"):
        algo.apply(params, Aggregate(sums, 3.0, 3), algo.init_server_state(params))
