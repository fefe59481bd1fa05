"""SIGKILL the server mid-round, restart it on the same state folder: it resumes from the last
committed round, and no committed round is lost or changed."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from hamrah.device.fleet import make_tokens

CONFIG = """
[data]
dataset = "mnist"
partition = "shards"
num_clients = 100
[model]
name = "2nn"
[algorithm]
name = "fedavg"
client_fraction = 0.1
local_epochs = 1
batch_size = 10
lr = 0.1
[run]
rounds = 4
seed = 0
[server]
goal_count = 5
over_selection = 1.2
selection_timeout_s = 20
reporting_timeout_s = 20
checkin_hold_s = 0.5
reconnect_min_s = 0.05
reconnect_max_s = 0.5
retry_delay_s = 0.1
tokens_file = "tokens.txt"
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _hamrah(*args, log):
    return subprocess.Popen([sys.executable, "-m", "hamrah.cli", *args], stdout=log, stderr=subprocess.STDOUT)


def _rounds(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.slow
def test_server_killed_mid_round_resumes_from_last_committed_round(tmp_path):
    (tmp_path / "server.toml").write_text(CONFIG)
    make_tokens(tmp_path / "tokens.txt", 8)
    port, state = _free_port(), tmp_path / "state"
    metrics = state / "metrics.jsonl"
    fleet_log, server_log = open(tmp_path / "fleet.log", "w"), open(tmp_path / "server.log", "w")
    args = ["server", "--config", str(tmp_path / "server.toml"), "--port", str(port), "--state", str(state)]
    server = _hamrah(*args, log=server_log)
    fleet = _hamrah(
        "fleet",
        "--server",
        f"127.0.0.1:{port}",
        "--devices",
        "8",
        "--config",
        str(tmp_path / "server.toml"),
        "--stores",
        str(tmp_path / "stores"),
        log=fleet_log,
    )
    try:
        deadline = time.monotonic() + 120
        while len(_rounds(metrics)) < 1 and time.monotonic() < deadline:
            assert server.poll() is None, (tmp_path / "server.log").read_text()
            time.sleep(0.05)
        before = _rounds(metrics)
        assert before, "no round committed in time"
        time.sleep(0.2)  # round 2 is now in flight
        os.kill(server.pid, signal.SIGKILL)
        server.wait(10)
        committed = _rounds(metrics)
        server = _hamrah(*args, log=server_log)
        assert server.wait(180) == 0, (tmp_path / "server.log").read_text()
        assert fleet.wait(60) == 0, (tmp_path / "fleet.log").read_text()
    finally:
        for p in (server, fleet):
            if p.poll() is None:
                p.kill()
    after = _rounds(metrics)
    assert [r["round"] for r in after] == [1, 2, 3, 4]
    assert after[: len(committed)] == committed  # committed rounds survive unchanged
    log = (tmp_path / "server.log").read_text()
    assert f"resuming from committed round {committed[-1]['round']}" in log
    summary = json.loads((state / "summary.json").read_text())
    assert summary["rounds_committed"] == 4
