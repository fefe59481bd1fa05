"""What a worker process raises reaches the run clearly: the task's own error as one ConfigError naming
the task, the error and where it was raised; an exception that cannot travel back to the run (does not
pickle, or does not unpickle: here hamrah errors, which pass through unwrapped), a SystemExit, or a
task the worker cannot load becomes a WorkerFailed that names it (they used to surface as an unrelated
TypeError, as 'a worker process died (killed, out of memory...)', or as the run's process exiting
without a word)."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest
import torch

from hamrah.algorithms import FedAvg, LocalSGD
from hamrah.core.errors import ConfigError, WorkerFailed
from hamrah.data import ArrayData, Dataset, FederatedDataset
from hamrah.models import TwoNN
from hamrah.simulation import SimulationConfig, Simulator, seeded

MODULE = textwrap.dedent(
    """
    import threading
    import time

    from hamrah.core.errors import ConfigError
    from hamrah.task import ClassificationTask


    class Unpicklable(ConfigError):
        def __init__(self, msg):
            super().__init__(msg)
            self.lock = threading.Lock()


    class NeedsTwo(ConfigError):
        def __init__(self, a, b):
            super().__init__(f"{a} and {b}")


    class Fragile(ClassificationTask):
        def __init__(self, mode):
            super().__init__()
            self.mode = mode

        def loss(self, output, target):
            if self.mode == "raise":
                raise RuntimeError("the task's own loss failed")
            if self.mode == "unpicklable":
                raise Unpicklable("holds a lock")
            if self.mode == "needs_two":
                raise NeedsTwo("first", "second")
            if self.mode == "exit":
                raise SystemExit(4)
            if self.mode == "slow":  # stands for a task blocked in its own code for a while
                time.sleep(0.4)
            return super().loss(output, target)


    def _refuse():
        raise RuntimeError("this task cannot be loaded here")


    class Unloadable(ClassificationTask):
        def __reduce__(self):
            return (_refuse, ())
    """
)


@pytest.fixture(scope="module")
def fed():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(160, 784, generator=g), torch.randint(0, 10, (160,), generator=g)
    ds = Dataset("random", ArrayData(x, y), ArrayData(x[:20], y[:20]), num_classes=10)
    return FederatedDataset(ds, tuple(np.arange(i * 40, (i + 1) * 40) for i in range(4)), "hand")


@pytest.fixture
def tasks(tmp_path, monkeypatch):
    (tmp_path / "fragile_tasks.py").write_text(MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))  # the spawned workers get the same sys.path
    import fragile_tasks

    yield fragile_tasks


def _run(fed, task):
    config = SimulationConfig(rounds=1, batched=False, workers=2)
    return Simulator(seeded(TwoNN, 0), fed, FedAvg(1.0, LocalSGD(1, 20, 0.1)), config, task=task).run()


@pytest.mark.parametrize(
    ("mode", "named"),
    [
        ("unpicklable", r"raised Unpicklable: holds a lock at .*fragile_tasks.py:\d+ \(it could not be sent back"),
        ("needs_two", r"raised NeedsTwo: first and second .*could not be sent back: TypeError"),
        ("exit", r"raised SystemExit: 4 .*would end the run's process"),
    ],
)
def test_an_error_that_cannot_travel_back_is_a_worker_failed_naming_it(fed, tasks, mode, named):
    with pytest.raises(WorkerFailed, match=named):
        _run(fed, tasks.Fragile(mode))


def test_the_tasks_own_error_is_named_with_where_it_was_raised(fed, tasks):
    named = r"task Fragile: local training raised RuntimeError: the task's own loss failed \(at .*fragile_tasks\.py"
    with pytest.raises(ConfigError, match=named):
        _run(fed, tasks.Fragile("raise"))


def test_a_task_a_worker_cannot_load_is_named(fed, tasks):
    with pytest.raises(WorkerFailed, match=r"could not load .*RuntimeError: this task cannot be loaded here"):
        _run(fed, tasks.Unloadable())


def test_workers_training_long_are_reported_while_the_round_waits(fed, tasks, monkeypatch, caplog):
    from hamrah.simulation import parallel

    monkeypatch.setattr(parallel, "QUIET_WARNING_S", 0.3)
    with caplog.at_level("WARNING", logger="hamrah.simulation"):
        result = _run(fed, tasks.Fragile("slow"))
    assert len(result.history) == 1  # the round still completes
    assert any("worker(s) still training after" in r.getMessage() for r in caplog.records), caplog.text
