"""A device trains a user task on the Example Store's live records: appended as they happen, some
expired, read under the task's schema and converted as the simulator converts the task's data."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from torch import nn

import hamrah
from hamrah.algorithms import build, client_update
from hamrah.core.errors import DataError
from hamrah.core.params import model_state
from hamrah.core.seeds import client_rng
from hamrah.data import Examples, Field, Schema
from hamrah.device import ExampleStore
from hamrah.device.compute import TaskJob
from hamrah.transport.plan import Plan, TaskRef

MOVIES = Schema(
    (Field("movie", "float32"), Field("genre", "int64", categories=("comedy", "drama")), Field("liked", "int64")),
    label="liked",
)


class Movies(hamrah.BinaryTask):
    name = "movies"
    schema = MOVIES

    def model(self) -> nn.Module:
        return nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))

    def data(self):  # the device never calls it: it trains on its store
        raise AssertionError("data() is the simulator's")


def _plan(task, round_=1):
    ref = TaskRef(task.task_name, task.version, task.digest(), False, MOVIES.to_json())
    algo = {"name": "fedavg", "client_fraction": 1.0, "local_epochs": 1, "batch_size": 2, "lr": 0.1}
    return Plan("train", round_, algo, None, 7, None, {}, ref)


def test_the_next_task_trains_on_exactly_the_live_records(tmp_path):
    task = Movies()
    now = time.time()
    with ExampleStore(tmp_path / "app.db", MOVIES) as store:
        # the app writes a record each time the user reacts; some kept 30 days, some 1 hour
        store.append({"movie": 17, "genre": "drama", "liked": 1}, timestamp=now - 40 * 86400, ttl_s=30 * 86400)
        store.append({"movie": 4, "genre": "comedy", "liked": 0}, timestamp=now - 3 * 86400, ttl_s=30 * 86400)
        store.append({"movie": 9, "genre": "drama", "liked": 1}, timestamp=now - 2 * 3600, ttl_s=3600)
        store.append_many(
            {"movie": [1, 2, 3], "genre": ["comedy", "drama", "comedy"], "liked": [1, 0, 0]},
            timestamp=now - 60,
            ttl_s=30 * 86400,
        )
        store.append({"movie": 5, "genre": "drama", "liked": 1}, timestamp=now)  # no expiry
        assert store.count(now) == 5  # 17 and 9 have expired
        torch.manual_seed(0)
        params = model_state(task.model())
        n, metrics, update, _ = TaskJob(store, task, 3, {}).run(_plan(task), params, None)
    assert n == 5
    live = Examples.from_columns(
        {"movie": [4, 1, 2, 3, 5], "genre": ["comedy", "comedy", "drama", "comedy", "drama"], "liked": [0, 1, 0, 0, 1]},
        MOVIES,
    ).to_array_data()  # the simulator's conversion: one-hot genre beside the movie number
    algorithm = build("fedavg", 1.0, local_epochs=1, batch_size=2, lr=0.1)
    expected = client_update(algorithm, task.model(), params, live, client_rng(7, 1, 3), client_id=3, task=task)
    delta = algorithm.client_statistics(expected.result)
    assert set(delta) == set(update)
    assert all(torch.equal(update[k], delta[k]) for k in delta)
    assert np.isfinite(metrics["train_loss"]) and 0.0 <= metrics["accuracy"] <= 1.0


def test_a_store_of_another_schema_or_with_only_expired_records_fails_the_task(tmp_path):
    task = Movies()
    params = model_state(task.model())
    with ExampleStore(tmp_path / "old.db", MOVIES) as store:
        store.append({"movie": 1, "genre": "drama", "liked": 1}, timestamp=time.time() - 100, ttl_s=10)
        with pytest.raises(DataError, match="has 0 live examples, the task needs at least 1"):
            TaskJob(store, task, 0, {}).run(_plan(task), params, None)
    other = Schema((Field("movie", "float32"), Field("liked", "int64")), label="liked")
    with ExampleStore(tmp_path / "other.db", other) as store:
        store.append({"movie": 1, "liked": 1})
        with pytest.raises(DataError, match=r"task movies: the example store holds \(movie: float32, liked"):
            TaskJob(store, task, 0, {}).run(_plan(task), params, None)
