"""The simulator's clients on a Ray cluster (``run.backend = "ray"``, here a local instance): the same model
as the local worker processes; a worker killed mid-round is restarted and its share retried without
changing the result; a worker that keeps dying, and an error in the task's own code, stop the run
clearly."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

from hamrah.algorithms import FedAvg, LocalSGD
from hamrah.core.errors import ConfigError, WorkerFailed
from hamrah.core.params import max_abs_diff
from hamrah.data import ArrayData, Dataset, FederatedDataset
from hamrah.experiments import from_dict
from hamrah.models import TwoNN
from hamrah.simulation import SimulationConfig, Simulator, ray_pool, seeded
from hamrah.task import ClassificationTask

pytestmark = pytest.mark.xdist_group("ray")  # one local Ray at a time: these tests share a worker
ALGO = FedAvg(0.5, LocalSGD(epochs=2, batch_size=10, lr=0.1))


@pytest.fixture(scope="module")
def fed(mnist):
    ds = Dataset(
        "mnist_small",
        ArrayData(mnist.train.x[:400], mnist.train.y[:400]),
        ArrayData(mnist.test.x[:100], mnist.test.y[:100]),
        num_classes=10,
    )
    perm = np.random.default_rng(2).permutation(400)
    parts = tuple(np.sort(p) for p in np.split(perm[:272], np.cumsum([30, 70, 45, 12, 90])))
    return FederatedDataset(ds, parts, "hand")


def _run(fed, batched, task=None, **run):
    sim = Simulator(seeded(TwoNN, 0), fed, ALGO, SimulationConfig(rounds=3, batched=batched, **run), task=task)
    return sim, sim.run()


def _task(marker: str, mode: str) -> ClassificationTask:
    """A task whose loss kills its worker's process (once, or every time) or raises."""

    class Fragile(ClassificationTask):
        def loss(self, output, target):
            if mode == "die_always" or (mode == "die_once" and not os.path.exists(marker)):
                open(marker, "w").close()
                os._exit(1)
            if mode == "raise":
                raise ValueError("the task's own loss failed")
            return super().loss(output, target)

    return Fragile()


@pytest.mark.parametrize("batched", [False, True], ids=["sequential", "batched"])
def test_ray_workers_give_the_local_worker_processes_model(fed, local_ray, batched):
    _, local = _run(fed, batched, workers=2)
    sim, on_ray = _run(fed, batched, workers=2, backend="ray")
    assert sim.workers == 2 and sim._pool is None  # run() stopped the actors
    assert max_abs_diff(local.params, on_ray.params) == 0.0
    assert max_abs_diff(on_ray.params, dict(seeded(TwoNN, 0).named_parameters())) > 1e-3
    assert [h.train_loss for h in local.history] == [h.train_loss for h in on_ray.history]
    assert [h.test_accuracy for h in local.history] == [h.test_accuracy for h in on_ray.history]


def test_more_workers_than_the_cluster_has_cpus_run_on_its_cpus(fed, local_ray, caplog):
    sim, _ = _run(fed, True, workers=5, backend="ray")
    assert sim.workers == 2  # the local instance has 2 CPUs
    assert "the Ray cluster has 2 CPUs: 2 workers train, not 3" in caplog.text  # 3: the cohort


def test_a_worker_killed_mid_round_is_restarted_and_the_result_does_not_change(fed, local_ray, tmp_path):
    marker = tmp_path / "died"
    _, killed = _run(fed, False, task=_task(str(marker), "die_once"), workers=2, backend="ray")
    assert marker.exists()  # a worker process did die in round 1
    _, whole = _run(fed, False, task=_task(str(marker), "die_once"), workers=2, backend="ray")  # nobody dies now
    assert max_abs_diff(killed.params, whole.params) == 0.0
    assert [h.clients for h in killed.history] == [3, 3, 3]


def test_a_worker_that_keeps_dying_stops_the_run_with_the_reason(fed, local_ray, tmp_path, monkeypatch):
    monkeypatch.setattr(ray_pool, "RESTARTS", 1)  # each restart starts a process: keep the test short
    with pytest.raises(WorkerFailed, match=r"run.backend = 'ray': a worker died 2 times"):
        _run(fed, False, task=_task(str(tmp_path / "m"), "die_always"), workers=2, backend="ray")


def test_an_error_in_the_tasks_own_code_on_a_worker_is_raised_as_it_was(fed, local_ray, tmp_path):
    with pytest.raises(ValueError, match="the task's own loss failed"):
        _run(fed, False, task=_task(str(tmp_path / "m"), "raise"), workers=2, backend="ray")


def test_backend_is_checked_and_ray_needs_its_extra(fed, monkeypatch):
    with pytest.raises(ConfigError, match="run.backend = 'spark': expected one of local, ray"):
        from_dict({"run": {"backend": "spark"}})
    assert from_dict({"run": {"backend": "ray"}}).run.backend == "ray"
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    with pytest.raises(ConfigError, match=r"run.backend = 'ray' needs the ray extra: pip install 'hamrah\[ray\]'"):
        _run(fed, False, workers=2, backend="ray")
