"""Every capability works with a user task, not only the built-in ones (issue 14): a user regression task
(its own loss, so the generic training path) and a user binary task (a module that is not an
``nn.Sequential``) run under every update pipeline, every robust aggregator and a poisoning attack in the
simulator, or are refused at config time with the reason the built-ins get."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tests.algorithms.test_matrix import PIPELINES
from torch import nn

import hamrah
from hamrah.aggregation import build_aggregator
from hamrah.algorithms import build
from hamrah.attacks import build_attack
from hamrah.core.params import max_abs_diff
from hamrah.data import ArrayData, Dataset, FederatedDataset
from hamrah.pipeline import resolve_pipeline
from hamrah.simulation import SimulationConfig, Simulator, seeded

POPULATION, COHORT, ROUNDS = 10, 5, 2


class Sales(hamrah.RegressionTask):
    """A user's regression: a linear model of 4 features."""

    def model(self) -> nn.Module:
        return nn.Linear(4, 1)

    def data(self):
        raise NotImplementedError  # the test hands the simulator its data


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.hidden, self.out = nn.Linear(4, 6), nn.Linear(6, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(self.hidden(x)))


class Churn(hamrah.BinaryTask):
    """A user's binary classifier (a module of its own, not a Sequential)."""

    bins = 50

    def model(self) -> nn.Module:
        return Net()

    def data(self):
        raise NotImplementedError


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models: threads only add contention


def _federated(task: hamrah.Task) -> FederatedDataset:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(260, 4)).astype(np.float32)
    score = x @ np.array([1.0, -2.0, 0.5, 0.0], dtype=np.float32)
    y = torch.from_numpy(score) if isinstance(task, Sales) else torch.from_numpy((score > 0).astype(np.int64))
    classes = 0 if isinstance(task, Sales) else 2
    ds = Dataset(
        "user", ArrayData(torch.from_numpy(x[:200]), y[:200]), ArrayData(torch.from_numpy(x[200:]), y[200:]), classes
    )
    cuts = np.cumsum([8, 12, 16, 20, 24, 16, 20, 28, 24, 32])[:-1]
    return FederatedDataset(ds, tuple(np.split(np.arange(200), cuts)), "hand")


def _simulator(task: hamrah.Task, algorithm: str, pipeline: str = "none", **kw) -> Simulator:
    p = PIPELINES[pipeline]
    spec = resolve_pipeline(
        p.get("compression"), p.get("privacy"), POPULATION, COHORT, ROUNDS, p.get("secure"), p.get("homomorphic")
    )
    hp = {"lr": 0.05, "batch_size": 8, "local_epochs": 1} | (
        {"num_clients": POPULATION} if algorithm == "scaffold" else {}
    )
    return Simulator(
        seeded(task.model, 0),
        _federated(task),
        build(algorithm, COHORT / POPULATION, **hp),
        SimulationConfig(rounds=ROUNDS, workers=1),
        pipeline=spec,
        task=task,
        **kw,
    )


def _moved_and_finite(sim: Simulator) -> list:
    start = {k: v.clone() for k, v in sim.params.items()}
    result = sim.run()
    assert all(torch.isfinite(v).all() for v in result.params.values())
    assert max_abs_diff(result.params, start) > 1e-5
    assert all(np.isfinite(r.train_loss) for r in result.history)
    return result.history


@pytest.mark.parametrize("pipeline", list(PIPELINES))
@pytest.mark.parametrize("task", [Sales(), Churn()], ids=["regression", "binary"])
def test_a_user_task_runs_under_every_pipeline(task, pipeline):
    history = _moved_and_finite(_simulator(task, "fedavg", pipeline))
    assert [r.clients for r in history] == [COHORT] * ROUNDS


@pytest.mark.parametrize("pipeline", ["none", "secagg", "central_dp", "paillier"])
def test_scaffold_and_fedprox_run_a_user_task(pipeline):
    for algorithm in ("scaffold", "fedprox", "fedadam"):
        _moved_and_finite(_simulator(Sales(), algorithm, pipeline))


@pytest.mark.parametrize("rule", ["median", "trimmed_mean", "krum", "multi_krum", "geomed", "norm_bound"])
def test_robust_aggregators_take_a_user_task(rule):
    params = {"norm_bound": {"bound": 1.0}, "krum": {"f": 1}, "multi_krum": {"f": 1, "m": 3}}.get(rule, {})
    _moved_and_finite(_simulator(Churn(), "fedavg", aggregator=build_aggregator(rule, **params)))


def test_a_poisoning_attack_and_its_defence_run_on_a_user_task():
    attack = build_attack("scale", frozenset({0, 3, 7}), factor=50.0)
    poisoned = _simulator(Churn(), "fedavg", attack=attack).run()
    defended = _simulator(Churn(), "fedavg", attack=attack, aggregator=build_aggregator("median")).run()
    clean = _simulator(Churn(), "fedavg").run()
    # the scaled updates drag the plain mean far from the clean run; the median stays near it
    assert max_abs_diff(poisoned.params, clean.params) > 3 * max_abs_diff(defended.params, clean.params)


def test_the_binary_task_records_its_auc_each_round():
    history = _simulator(Churn(), "fedavg").run().history
    assert all(0.0 <= r.extra["test_auc"] <= 1.0 for r in history)
