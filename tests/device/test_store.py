"""The Example Store: add, expire, count, read in batches; refuse bad examples and corrupt files."""

import numpy as np
import pytest
import torch

from hamrah.core.errors import DataError
from hamrah.data.federated import ArrayData
from hamrah.device.store import ExampleStore, import_partition


def test_add_count_and_read_back_in_batches(tmp_path):
    xs = np.random.default_rng(0).random((25, 1, 4, 4), dtype=np.float32)
    ys = np.arange(25) % 10
    with ExampleStore(tmp_path / "d.db") as store:
        assert store.add_many(xs, ys) == 25
        store.add(xs[0], 3)
        assert store.count() == 26
        batches = list(store.batches(10))
        assert [len(b[0]) for b in batches] == [10, 10, 6]
        np.testing.assert_array_equal(np.concatenate([b[0] for b in batches])[:25], xs)
        data = store.read_all()
        assert data.x.shape == (26, 1, 4, 4) and data.x.dtype == torch.float32
        assert data.y.tolist()[:25] == ys.tolist() and int(data.y[25]) == 3


def test_time_to_live_expires_examples(tmp_path):
    with ExampleStore(tmp_path / "d.db") as store:
        store.add_many(np.zeros((3, 2), np.float32), np.zeros(3, np.int64), timestamp=100.0, ttl_s=10.0)
        store.add_many(np.ones((2, 2), np.float32), np.ones(2, np.int64), timestamp=100.0)
        assert store.count(now=105.0) == 5
        assert store.count(now=111.0) == 2  # expired ones are not served
        assert len(store.read_all(now=111.0)) == 2
        assert store.expire(now=111.0) == 3
        assert store.count(now=0.0) == 2


def test_examples_must_match_the_store_layout(tmp_path):
    with ExampleStore(tmp_path / "d.db") as store:
        store.add(np.zeros((1, 4, 4), np.float32), 1)
        with pytest.raises(DataError, match=r"field .x. has shape \[1, 5, 5\] per example, expected \[1, 4, 4\]"):
            store.add(np.zeros((1, 5, 5), np.float32), 1)
        with pytest.raises(DataError, match="labels"):
            store.add_many(np.zeros((2, 1, 4, 4), np.float32), np.zeros(3, np.int64))
        assert store.count() == 1


def test_empty_and_corrupt_stores_give_clear_errors(tmp_path):
    with ExampleStore(tmp_path / "empty.db") as store, pytest.raises(DataError, match="empty"):
        store.read_all()
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(DataError, match="not a usable example store"):
        ExampleStore(bad)


def test_import_partition_is_all_or_nothing(tmp_path):
    data = ArrayData(torch.rand(7, 1, 2, 2), torch.arange(7))
    path = tmp_path / "client.db"
    assert import_partition(path, data) == 7
    with pytest.raises(DataError, match="already exists"):
        import_partition(path, data)
    with ExampleStore(path) as store:
        assert store.count() == 7
    assert not (tmp_path / "client.db.partial").exists()


def test_client_state_persists(tmp_path):
    with ExampleStore(tmp_path / "d.db") as store:
        assert store.client_state() is None
        store.save_client_state({"w": torch.ones(3)})
    with ExampleStore(tmp_path / "d.db") as store:
        assert torch.equal(store.client_state()["w"], torch.ones(3))
