"""An Example Store damaged past its first page: every read and write names the store in a DataError (a raw
sqlite3.DatabaseError stopped a device mid-run with a traceback), and a device fails its task with it."""

from __future__ import annotations

import asyncio
import shutil

import numpy as np
import pytest
import torch
from tests.device.hostile_server import HostileServer, serve_one_device

from hamrah.core.errors import DataError
from hamrah.device.store import ExampleStore
from hamrah.transport.proto import fl_pb2 as pb

PAGE = 4096


@pytest.fixture(scope="module")
def intact(tmp_path_factory):
    path = tmp_path_factory.mktemp("store") / "intact.db"
    with ExampleStore(path) as store:
        rng = np.random.default_rng(0)
        store.add_many(rng.normal(size=(500, 4)).astype(np.float32), rng.integers(0, 3, 500))
        store.save_client_state({"w": torch.zeros(3)})
    return path


def _damaged(intact, tmp_path, page: int):
    path = tmp_path / f"page{page}.db"
    shutil.copy(intact, path)
    data = bytearray(path.read_bytes())
    data[page * PAGE : (page + 1) * PAGE] = b"\xff" * PAGE
    path.write_bytes(bytes(data))
    return path


def _uses(store: ExampleStore):
    return [
        store.count,
        store.read_all,
        store.client_state,
        store.expire,
        lambda: store.save_client_state({"w": torch.ones(3)}),
        lambda: store.add(np.zeros(4, np.float32), np.int64(0)),
    ]


@pytest.mark.parametrize("page", range(1, 14))
def test_a_damaged_page_gives_a_data_error_naming_the_store(intact, tmp_path, page):
    path = _damaged(intact, tmp_path, page)
    try:
        store = ExampleStore(path)
    except DataError as e:
        assert str(path) in str(e)
        return
    with store:
        for use in _uses(store):
            try:
                use()
            except DataError as e:  # before: sqlite3.DatabaseError "database disk image is malformed"
                assert str(path) in str(e) and "expected an intact SQLite file" in str(e)


def test_a_device_whose_records_are_damaged_fails_its_task_with_the_reason(intact, tmp_path):
    for page in range(2, 14):  # a page of records: counted fine, read not
        path = _damaged(intact, tmp_path, page)
        with ExampleStore(path) as store:
            try:
                store.count()
                store.read_all()
            except DataError:
                break
    else:
        pytest.skip("no page of records alone was damaged")
    servicer = HostileServer()
    with ExampleStore(path) as store:
        stats = asyncio.run(serve_one_device(servicer, store))
    assert stats.failed == 1 and stats.finished  # the device went on (it stopped with a traceback)
    [header] = servicer.reports
    assert header.status == pb.FAILED and "the example store cannot be read or written" in header.reason
