"""Trainers take the loss and metrics from the task: a user MLP gets the batched path (equal to the
one-client loop), a regression task trains through the simulator, a __main__ task refuses workers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from hamrah.algorithms import FedAvg, LocalSGD, train_local
from hamrah.algorithms.base import ExampleDP
from hamrah.core.errors import ConfigError
from hamrah.data import ArrayData, Dataset, federate
from hamrah.simulation import SimulationConfig, Simulator, seeded, supports_batching, train_cohort
from hamrah.simulation.batched import mlp_layers
from hamrah.task import ClassificationTask, RegressionTask


def _mlp() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))


def test_sequential_relu_mlp_is_recognised_and_others_are_not():
    assert mlp_layers(_mlp()) == ("1", "3") and supports_batching(_mlp())
    assert mlp_layers(nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))) is None
    assert mlp_layers(nn.Sequential(nn.Linear(6, 8, bias=False))) is None
    assert mlp_layers(nn.Sequential(nn.Linear(6, 8), nn.ReLU())) is None


def test_user_mlp_batched_cohort_equals_the_one_client_loop():
    torch.manual_seed(0)
    model = _mlp()
    params = {k: v.detach().clone() for k, v in model.named_parameters()}
    datas = [ArrayData(torch.randn(n, 6), torch.randint(0, 3, (n,))) for n in (17, 9, 30)]
    plan = LocalSGD(epochs=2, batch_size=5, lr=0.1)
    batched = train_cohort(model, params, datas, plan, [np.random.default_rng(c) for c in range(3)])
    for c, d in enumerate(datas):
        loop = train_local(_mlp(), params, d, plan, np.random.default_rng(c))
        for name in params:
            torch.testing.assert_close(batched[c].params[name], loop.params[name], atol=1e-5, rtol=1e-5)
        assert batched[c].train_loss == pytest.approx(loop.train_loss, rel=1e-5)


class Line(RegressionTask):
    def model(self):
        return nn.Linear(3, 1)

    def data(self):
        g = torch.Generator().manual_seed(0)
        x = torch.randn(400, 3, generator=g)
        y = x @ torch.tensor([1.0, -2.0, 0.5]) + 0.3
        return Dataset("line", ArrayData(x[:300], y[:300]), ArrayData(x[300:], y[300:]), 0)


def test_regression_task_trains_in_the_simulator_and_reports_mse():
    task = Line()
    fed = federate(task.data(), "iid", 4, seed=0)
    sim = Simulator(
        seeded(task.model, 0), fed, FedAvg(1.0, LocalSGD(2, 10, 0.05)), SimulationConfig(rounds=8), task=task
    )
    assert not sim.batched and sim.workers == 1  # its own loss; a user task trains in-process
    hist = sim.run().history
    assert hist[-1].test_accuracy is None and hist[-1].extra["test_mse"] < 0.05 < hist[0].extra["test_mse"]
    assert hist[-1].test_loss == pytest.approx(hist[-1].extra["test_mse"])


def test_dpsgd_descends_the_task_loss():
    task = Line()
    d = task.data().train
    params = {k: v.detach().clone() for k, v in seeded(task.model, 0).named_parameters()}
    plan = LocalSGD(3, 20, 0.1, example_dp=ExampleDP(1e6, 0.0, poisson=False))
    dp = train_local(seeded(task.model, 0), params, d, plan, np.random.default_rng(0), task=task)
    sgd = train_local(seeded(task.model, 0), params, d, LocalSGD(3, 20, 0.1), np.random.default_rng(0), task=task)
    for k in params:
        torch.testing.assert_close(dp.params[k], sgd.params[k], atol=1e-5, rtol=1e-5)


class Main(ClassificationTask):
    def model(self):
        return _mlp()

    def data(self):
        raise NotImplementedError


Main.__module__ = "__main__"  # as if defined in a script run without a __main__ guard


def test_a_task_defined_in_main_refuses_worker_processes():
    ds = Dataset(
        "t",
        ArrayData(torch.randn(40, 6), torch.randint(0, 3, (40,))),
        ArrayData(torch.zeros(0, 6), torch.zeros(0, dtype=torch.long)),
        3,
    )
    fed = federate(ds, "iid", 4, seed=0)
    algo = FedAvg(1.0, LocalSGD(1, 10, 0.1, momentum=0.9))  # not plain SGD: not batched
    sim = Simulator(_mlp(), fed, algo, SimulationConfig(rounds=1), task=Main())
    assert sim.workers == 1  # default: in-process
    with pytest.raises(ConfigError, match="__main__.*run.workers = 1"):
        Simulator(_mlp(), fed, algo, SimulationConfig(rounds=1, workers=2), task=Main())


class Sites(ClassificationTask):
    def __init__(self, path):
        self.path = path

    def model(self):
        return _mlp()

    def data(self):
        return self.read_tables(self.path, label="y", client_column="site")


def test_a_client_id_column_is_the_natural_partition(tmp_path):
    from hamrah.task import task_dataset

    rows = ["site,a,b,c,d,e,f,y"] + [f"s{i % 3},{i},1,2,3,4,5,{i % 2}" for i in range(30)]
    (tmp_path / "all.csv").write_text("\n".join(rows) + "\n")
    fed = federate(task_dataset(Sites(tmp_path / "all.csv")), "natural", 0, seed=0)
    assert fed.num_clients == 3 and sorted(fed.client_sizes().tolist()) == [10, 10, 10]
    assert fed.dataset.train.x.shape == (30, 6)  # the site column is not a feature
