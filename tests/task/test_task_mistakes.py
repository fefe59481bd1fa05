"""A user's task code that is wrong or misbehaves: each mistake stops with one line naming the task and
what was expected (before round 1 where two training examples show it), in ``hamrah run``, ``evaluate``
and ``predict``, and fails a device's task instead of ending the device."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from hamrah.algorithms import LocalSGD, train_local
from hamrah.cli import main
from hamrah.core.errors import ConfigError, HamrahError
from hamrah.core.params import model_state
from hamrah.data import ArrayData, Field, Schema
from hamrah.device import ExampleStore
from hamrah.device.compute import TaskJob
from hamrah.experiments.config import from_dict
from hamrah.experiments.runner import prepare, run_experiment
from hamrah.task import ClassificationTask
from hamrah.transport.plan import Plan, TaskRef

ROOT = Path(__file__).resolve().parents[2]
BREAST = ROOT / "data" / "tabular" / "breast_homo"

MODULE = f'''
import sys
import torch
from torch import nn
import hamrah
from hamrah.data import ArrayData, Dataset

def _data(xdtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(60, 6, generator=g).to(xdtype), torch.randint(0, 2, (60,), generator=g)
    return Dataset("p", ArrayData(x[:40], y[:40]), ArrayData(x[40:], y[40:]), 2)

class Good(hamrah.ClassificationTask):
    def model(self):
        return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 2))
    def data(self):
        return _data()

class OneD(Good):
    def model(self):
        return nn.Sequential(nn.Linear(6, 1), nn.Flatten(0))

class Pair(Good):
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.l = nn.Linear(6, 2)
        def forward(self, x):
            return self.l(x), None
    def model(self):
        return self.M()

class VectorLoss(Good):
    def loss(self, output, target):
        return nn.functional.cross_entropy(output, target, reduction="none")

class FloatLoss(Good):
    def loss(self, output, target):
        return float(nn.functional.cross_entropy(output.detach(), target))

class DetachedLoss(Good):
    def loss(self, output, target):
        return nn.functional.cross_entropy(output.detach(), target)

class NanLoss(Good):
    def loss(self, output, target):
        return (output - output).sum() / 0

class RaisingMetrics(Good):
    def metrics(self, output, target):
        return {{"loss": hamrah.Weighted(1.0, 1), "auc": hamrah.Weighted(output[9], 1)}}

class FloatMetrics(Good):
    def metrics(self, output, target):
        return {{"loss": 0.5}}

class TensorMetrics(Good):
    def metrics(self, output, target):
        return {{"loss": hamrah.Weighted(output.sum(), len(output))}}

class NoParameters(Good):
    def model(self):
        return nn.Flatten()

class Frozen(Good):
    def model(self):
        m = super().model()
        m[0].weight.requires_grad_(False)
        return m

class NoModel(Good):
    def model(self):
        return None

class ShortTargets(Good):
    def data(self):
        d = _data()
        return Dataset("p", ArrayData(d.train.x, d.train.y[:30]), d.test, 2)

class NumpyInputs(Good):
    def data(self):
        d = _data()
        return Dataset("p", ArrayData(d.train.x.numpy(), d.train.y), d.test, 2)

class OwnError(Exception):
    pass

class FailsOnBatches(Good):  # takes the two examples prepare tries, not a batch of 8
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.l = nn.Linear(6, 2)
        def forward(self, x):
            if len(x) > 2:
                raise OwnError("batch of " + str(len(x)))
            return self.l(x)
    def model(self):
        return self.M()

class Tab(hamrah.BinaryTask):
    name = "tab"
    def model(self):
        if "break_model" in sys.argv:
            raise OwnError("no such checkpoint")
        return nn.Sequential(nn.Linear(30, 4), nn.ReLU(), nn.Linear(4, 2))
    def data(self):
        files = [r"{BREAST / "breast_homo_guest.csv.gz"}", r"{BREAST / "breast_homo_host.csv.gz"}"]
        return self.read_tables(files, r"{BREAST / "breast_homo_test.csv.gz"}", label="y",
                                features=[f"x{{i}}" for i in range(30)])
    def predict(self, output):
        return None if "break_predict" in sys.argv else super().predict(output)
'''


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "mistake_tasks.py").write_text(MODULE)
    yield tmp_path
    sys.modules.pop("mistake_tasks", None)


def _config(folder: Path, cls: str, **run):
    return from_dict(
        {
            "task": {"entry": f"mistake_tasks:{cls}"},
            "data": {"partition": "iid", "num_clients": 2},
            "algorithm": {"client_fraction": 1.0, "batch_size": 8, "lr": 0.1},
            "run": {"rounds": 1, **run},
        },
        base=folder,
    )


def test_the_well_behaved_task_runs(folder):
    assert run_experiment(_config(folder, "Good"), None, plot=False)["final_accuracy"] is not None


@pytest.mark.parametrize(
    ("cls", "message"),
    [
        (
            "OneD",
            r"task OneD: its model's output has shape \(2,\) for targets of shape \(2,\); a ClassificationTask "
            r"expects \(2, classes\)",
        ),
        ("Pair", "task Pair: its model returned a tuple; a ClassificationTask expects a floating tensor"),
        ("VectorLoss", r"task VectorLoss: loss\(\) returned a tensor of shape \(2,\); expected a 0-d tensor"),
        ("FloatLoss", r"task FloatLoss: loss\(\) returned a float; expected a 0-d tensor"),
        ("DetachedLoss", r"task DetachedLoss: loss\(\) returned a tensor with no gradient; expected it computed"),
        ("NanLoss", r"task NanLoss: loss\(\) of the untrained model on two training examples is nan"),
        ("RaisingMetrics", r"task RaisingMetrics: metrics\(\) raised IndexError: .* \(at mistake_tasks.py:\d+\)"),
        ("FloatMetrics", r"task FloatMetrics: metrics\(\)\['loss'\] is a float; expected a Weighted, Summed"),
        ("TensorMetrics", r"task TensorMetrics: metrics\(\)\['loss'\] holds a Tensor; expected Python numbers"),
        ("NoParameters", "task NoParameters: its model has no parameters; expected at least one nn.Parameter"),
        ("Frozen", "task Frozen: its model's parameter '0.weight' has requires_grad=False; expected every parameter"),
        ("NoModel", r"task NoModel: model\(\) returned a NoneType; expected a torch.nn.Module"),
        ("ShortTargets", r"task ShortTargets: data\(\)'s training set has 40 inputs \(x\) and 30 targets \(y\)"),
        ("NumpyInputs", r"task NumpyInputs: data\(\)'s training x is a ndarray; expected a torch.Tensor"),
    ],
)
def test_each_task_mistake_stops_prepare_with_one_line(folder, cls, message):
    with pytest.raises(ConfigError, match=message) as err:
        prepare(_config(folder, cls))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_model_failing_in_training_is_one_line_naming_the_task_and_its_line(folder, workers):
    with pytest.raises(
        ConfigError,
        match=r"task FailsOnBatches: local training raised OwnError: batch of \d+ "
        r"\(at mistake_tasks.py:\d+\)",
    ):
        run_experiment(_config(folder, "FailsOnBatches", workers=workers), None, plot=False)


def test_cli_run_of_a_task_mistake_is_exit_2_without_a_traceback(folder, capsys):
    (folder / "run.toml").write_text(
        'task.entry = "mistake_tasks:FailsOnBatches"\n[data]\npartition = "iid"\nnum_clients = 2\n'
        "[algorithm]\nclient_fraction = 1.0\nbatch_size = 8\n[run]\nrounds = 1\n"
    )
    assert main(["run", str(folder / "run.toml"), "--out", str(folder / "out"), "--no-plot", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "hamrah: error: task FailsOnBatches: local training raised OwnError" in err


def test_evaluate_and_predict_name_a_broken_model_or_predict(folder, capsys, monkeypatch):
    (folder / "tab.toml").write_text(
        'task.entry = "mistake_tasks:Tab"\n[data]\npartition = "natural"\nnum_clients = 0\n'
        "[algorithm]\nclient_fraction = 1.0\nbatch_size = 16\n[run]\nrounds = 1\n"
    )
    out, cfg = str(folder / "out"), str(folder / "tab.toml")
    assert main(["run", cfg, "--out", out, "--no-plot", "--quiet"]) == 0
    predict = ["predict", "--model", out, "--config", cfg, "--csv", str(BREAST / "breast_homo_test.csv.gz")]
    monkeypatch.setattr(sys, "argv", ["hamrah", "break_predict"])
    assert main([*predict, "--output", str(folder / "p.csv")]) == 2
    assert r"task tab: predict() returned a NoneType; expected a dict of column names to tensors" in (
        capsys.readouterr().err
    )
    monkeypatch.setattr(sys, "argv", ["hamrah", "break_model"])
    for argv in (["evaluate", "--model", out, "--config", cfg], [*predict, "--output", str(folder / "q.csv")]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err
        assert "task tab: model() raised OwnError: no such checkpoint (at mistake_tasks.py:" in err


def test_a_module_that_calls_sys_exit_on_import_is_named(folder):
    (folder / "script_task.py").write_text("import argparse\nargparse.ArgumentParser().parse_args(['--nope'])\n")
    cfg = from_dict({"task": {"entry": "script_task:T"}}, base=folder)
    try:
        with pytest.raises(ConfigError, match=r"importing 'script_task' called sys.exit\(2\); expected a module"):
            prepare(cfg)
    finally:
        sys.modules.pop("script_task", None)


class SpareHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.used, self.spare = nn.Linear(3, 2), nn.Linear(2, 2)

    def forward(self, x):
        return self.used(x)


class Spare(ClassificationTask):
    """A model with a layer its forward does not use (a head kept for later)."""

    def model(self):
        return SpareHead()

    def data(self):
        raise AssertionError("not used")


def test_a_parameter_the_loss_does_not_use_gets_a_zero_gradient():
    task = Spare()
    model = task.model()
    params = model_state(model)
    data = ArrayData(torch.randn(12, 3), torch.randint(0, 2, (12,)))
    out = train_local(model, params, data, LocalSGD(1, 4, 0.1), np.random.default_rng(0), task=task).params
    assert torch.equal(out["spare.weight"], params["spare.weight"])
    assert not torch.equal(out["used.weight"], params["used.weight"])


SCHEMA = Schema((Field("a", "float32"), Field("b", "float32"), Field("y", "int64")), label="y")


class OwnError(Exception):
    pass


class Device(ClassificationTask):
    name = "device"
    schema = SCHEMA

    def __init__(self, fail: str):
        self.fail = fail

    def model(self):
        return nn.Sequential(nn.Linear(2, 2))

    def loss(self, output, target):
        if self.fail == "loss":
            raise OwnError("loss broke")
        return super().loss(output, target)

    def metrics(self, output, target):
        if self.fail == "metrics":
            raise OwnError("metrics broke")
        return super().metrics(output, target)

    def data(self):
        raise AssertionError("a device trains on its store")


@pytest.mark.parametrize(
    ("fail", "kind", "what"), [("loss", "train", "local training"), ("metrics", "evaluate", "evaluation")]
)
def test_a_device_fails_the_task_of_a_task_raising_its_own_exception(tmp_path, fail, kind, what):
    """The device fails a task on a HamrahError (a task's own exception class would end the device)."""
    task = Device(fail)
    ref = TaskRef(task.task_name, task.version, task.digest(), True, SCHEMA.to_json())
    algo = {"name": "fedavg", "client_fraction": 1.0, "local_epochs": 1, "batch_size": 2, "lr": 0.1}
    with ExampleStore(tmp_path / "d.db", SCHEMA) as store:
        store.append_many({"a": [1, 2, 3, 4], "b": [0, 1, 0, 1], "y": [0, 1, 0, 1]}, timestamp=time.time())
        with pytest.raises(HamrahError, match=rf"task device: {what} raised OwnError: {fail} broke \(at "):
            TaskJob(store, task, 3, {}).run(
                Plan(kind, 1, algo, None, 7, None, {}, ref), model_state(task.model()), None
            )


class BatchNormDevice(Device):
    name = "device-bn"

    def model(self):
        if self.fail == "model":
            raise OwnError("model broke")
        return nn.Sequential(nn.Linear(2, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2))


def _device_run(tmp_path, task, params):
    ref = TaskRef(task.task_name, task.version, task.digest(), True, SCHEMA.to_json())
    algo = {"name": "fedavg", "client_fraction": 1.0, "local_epochs": 1, "batch_size": 2, "lr": 0.1}
    with ExampleStore(tmp_path / "d.db", SCHEMA) as store:
        store.append_many({"a": [1, 2, 3, 4], "b": [0, 1, 0, 1], "y": [0, 1, 0, 1]}, timestamp=time.time())
        return TaskJob(store, task, 3, {}).run(Plan("train", 1, algo, None, 7, None, {}, ref), params, None)


def test_a_device_trains_a_batchnorm_task(tmp_path):
    # the device's check that the model takes the store's inputs ran one example in training mode, which
    # BatchNorm1d refuses: every device failed every task of such a model
    task = BatchNormDevice("")
    n, _, update, _ = _device_run(tmp_path, task, model_state(task.model()))
    assert n == 4 and update


def test_a_device_fails_the_task_whose_model_raises_its_own_exception(tmp_path):
    params = model_state(BatchNormDevice("").model())
    with pytest.raises(HamrahError, match=r"task device-bn: model\(\) raised OwnError: model broke \(at "):
        _device_run(tmp_path, BatchNormDevice("model"), params)  # it ended the device process
