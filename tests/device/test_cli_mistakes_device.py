"""``hamrah device`` and ``hamrah fleet`` mistakes: a malformed address, a server that accepts and never
answers, someone else's SQLite file, fleet options checked before any store is written, and a fleet
none of whose updates was taken exits 2."""

from __future__ import annotations

import socket
import sqlite3
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hamrah.cli import main
from hamrah.core.errors import DataError
from hamrah.device.store import ExampleStore
from hamrah.transport.endpoints import is_address, tls_failure

SMALL = textwrap.dedent("""
    [data]
    dataset = "mnist"
    partition = "iid"
    num_clients = 5
    [model]
    name = "logreg"
    [run]
    rounds = 1
""")


def _error(argv, capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("hamrah: error: "), err
    return err[0]


def test_addresses_and_tls_failures_are_told_apart():
    assert is_address("127.0.0.1:50051") and is_address("[::1]:7") and is_address("host.example:65535")
    assert not any(is_address(a) for a in ("localhost", "h:0", "h:99999", ":80", "h:-1", None, 5))
    assert tls_failure("... Ssl handshake failed: CERTIFICATE_VERIFY_FAILED") and not tls_failure("Connection refused")


def test_device_options_are_checked(tmp_path, capsys):
    store = tmp_path / "s.db"
    ExampleStore(store).close()
    base = ["device", "--store", str(store), "--assume-eligible"]
    assert "--server localhost: expected HOST:PORT" in _error([*base, "--server", "localhost"], capsys)
    assert "--server h:99999: expected HOST:PORT" in _error([*base, "--server", "h:99999"], capsys)
    assert "--max-tasks 0: expected an integer >= 1" in _error([*base, "--server", "h:1", "--max-tasks", "0"], capsys)


def test_someone_elses_sqlite_file_is_refused_and_left_as_it_was(tmp_path):
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE foo (a INTEGER)")
    with pytest.raises(DataError, match=r"other.db: not a usable example store \(it holds other tables \(foo\)"):
        ExampleStore(path)
    with sqlite3.connect(path) as db:
        assert [r[0] for r in db.execute("SELECT name FROM sqlite_master")] == ["foo"]


def test_a_server_that_accepts_and_never_answers_is_reported_within_retry_for(tmp_path):
    store = tmp_path / "s.db"
    ExampleStore(store).close()
    with socket.socket() as mute:  # accepts TCP connections (the backlog), never speaks HTTP/2
        mute.bind(("127.0.0.1", 0))
        mute.listen(8)
        port = mute.getsockname()[1]
        argv = ["device", "--server", f"127.0.0.1:{port}", "--store", str(store), "--assume-eligible"]
        proc = subprocess.run(
            [sys.executable, "-m", "hamrah.cli", *argv, "--retry-for", "2"],
            capture_output=True,
            text=True,
            timeout=120,  # a device that hangs fails here
        )
    assert proc.returncode == 2, proc.stderr
    assert f"server 127.0.0.1:{port}" in proc.stderr.strip().splitlines()[-1]
    assert "for 2 s" in proc.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--devices", "0"], "--devices 0: expected an integer in 1..100000"),
        (["--devices", "2", "--drop", "1.5"], "--drop 1.5: expected a probability in [0, 1]"),
        (["--devices", "9"], "clients 0..8 asked for, the partition has clients 0..4"),
        (["--devices", "2", "--server", "localhost"], "--server localhost: expected HOST:PORT"),
    ],
)
def test_fleet_options_are_checked_before_any_store_is_written(tmp_path, capsys, extra, message):
    cfg = tmp_path / "c.toml"
    cfg.write_text(SMALL)
    stores = tmp_path / "stores"
    argv = ["fleet", "--server", "127.0.0.1:1", "--config", str(cfg), "--stores", str(stores), *extra]
    assert message in _error(argv, capsys)
    assert not stores.exists() or not any(stores.iterdir())


def test_a_fleet_none_of_whose_updates_was_taken_exits_2(tmp_path, capsys, monkeypatch):
    import hamrah.device.fleet as fleet

    async def refused(base, stores, tokens, churn, keys, task, on_round):
        return [SimpleNamespace(reported=0, aborted=0, failed=3, messages=["round 1: failed"]) for _ in stores]

    monkeypatch.setattr(fleet, "run_fleet", refused)
    cfg = tmp_path / "c.toml"
    cfg.write_text(SMALL)
    argv = ["fleet", "--server", "127.0.0.1:1", "--config", str(cfg), "--stores", str(tmp_path / "s"), "--devices", "2"]
    assert main(argv) == 2
    assert "fleet: no device's update was taken (6 tasks failed" in capsys.readouterr().err


@settings(max_examples=200, deadline=None)
@given(host=st.from_regex(r"[a-z0-9.\-]{1,20}", fullmatch=True), port=st.integers(-(10**6), 10**6))
def test_an_address_is_accepted_exactly_when_its_port_is_in_range(host, port):
    assert is_address(f"{host}:{port}") == (1 <= port <= 65535)
    assert not is_address(host) or ":" in host
