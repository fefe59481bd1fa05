"""Process faults on the real `hamrah server` CLI with a `hamrah fleet`: a second server on the same state
folder is refused, the server is SIGKILLed at random points of rounds (seeded) and restarted, then
drained with SIGTERM and restarted; every round commits once, committed rounds never change, totals and
elapsed time carry over the restarts; each restart resumes from the last committed round."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time

import pytest

from hamrah.device.fleet import make_tokens

ROUNDS = 5
CONFIG = f"""
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
rounds = {ROUNDS}
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


def _rounds(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _hamrah(*args, log):
    return subprocess.Popen([sys.executable, "-m", "hamrah.cli", *args], stdout=log, stderr=subprocess.STDOUT)


def _wait_rounds(metrics, n, server, log_path, timeout=120):
    deadline = time.monotonic() + timeout
    while len(_rounds(metrics)) < n:
        assert server.poll() is None, log_path.read_text()[-3000:]
        assert time.monotonic() < deadline, f"round {n} not committed in time"
        time.sleep(0.05)


@pytest.mark.slow
def test_second_server_refused_sigkill_at_random_points_then_sigterm_drain(tmp_path):
    (tmp_path / "server.toml").write_text(CONFIG)
    make_tokens(tmp_path / "tokens.txt", 8)
    port, state = _free_port(), tmp_path / "state"
    metrics, log_path = state / "metrics.jsonl", tmp_path / "server.log"
    server_log, fleet_log = open(log_path, "w"), open(tmp_path / "fleet.log", "w")
    args = ["server", "--config", str(tmp_path / "server.toml"), "--port", str(port), "--state", str(state)]
    rng = random.Random(13)
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
    snapshots = []
    try:
        _wait_rounds(metrics, 1, server, log_path)
        server.send_signal(signal.SIGSTOP)  # paused, not gone: it still holds the state folder
        try:
            other = subprocess.run(
                [sys.executable, "-m", "hamrah.cli", *args[:3], "--port", str(_free_port()), "--state", str(state)],
                capture_output=True,
                text=True,
                timeout=120,
            )
        finally:
            server.send_signal(signal.SIGCONT)
        assert other.returncode == 2 and "another server (pid" in other.stderr + other.stdout, other
        for _kill in range(2):  # SIGKILL at a random point of a round, then restart
            time.sleep(rng.uniform(0.0, 1.5))
            os.kill(server.pid, signal.SIGKILL)
            server.wait(10)
            snapshots.append(_rounds(metrics))
            server = _hamrah(*args, log=server_log)
            _wait_rounds(metrics, len(snapshots[-1]) + 1, server, log_path)
        server.send_signal(signal.SIGTERM)  # drain: the round in flight finishes, then a clean exit
        assert server.wait(120) == 0, log_path.read_text()[-3000:]
        snapshots.append(_rounds(metrics))
        server = _hamrah(*args, log=server_log)
        assert server.wait(240) == 0, log_path.read_text()[-3000:]
        assert fleet.wait(120) == 0, (tmp_path / "fleet.log").read_text()[-3000:]
    finally:
        for p in (server, fleet):
            if p.poll() is None:
                p.kill()
    after = _rounds(metrics)
    assert [r["round"] for r in after] == list(range(1, ROUNDS + 1))
    for snap in snapshots:
        assert after[: len(snap)] == snap  # committed rounds are never lost or changed
    elapsed = [r["elapsed_s"] for r in after]
    assert elapsed == sorted(elapsed)  # the clock carries over restarts
    text = log_path.read_text()
    assert "SIGTERM: draining" in text and "Traceback" not in text
    for snap in snapshots:
        assert f"resuming from committed round {snap[-1]['round']}" in text
    summary = json.loads((state / "summary.json").read_text())
    assert summary["rounds_committed"] == ROUNDS and summary["restarts"] >= 3
    assert summary["wall_s"] == after[-1]["elapsed_s"]
