"""The live dashboard in a real browser: a server and a fleet run DP-FTRL rounds over gRPC while headless
Chromium (the distribution's package, installed by scripts/install.sh) opens the dashboard; the round
count, the device counts and epsilon it shows match the server's records. A request without the token
is refused; malformed requests do not disturb the rounds; no update contents are ever served."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import http.client
import json
import re
import socket
import time

import pytest
from tests.observe.browser import BROWSER
from tests.system.harness import make_setup, records, run_system

from hamrah.experiments.config import from_dict
from hamrah.observe.dashboard import DashboardConfig, DashboardServer, Source
from hamrah.observe.runs import RunFolder, read_records

pytestmark = pytest.mark.slow
TOKEN = "operator-token-for-the-test"
ROUNDS = 200  # an upper bound: the test drains the server once the browser has looked


def _experiment():
    return from_dict(
        {
            "data": {"dataset": "mnist", "partition": "iid", "num_clients": 20},
            "model": {"name": "logreg"},
            "algorithm": {"name": "fedavg", "client_fraction": 0.2, "local_epochs": 1, "batch_size": 50, "lr": 0.1},
            "run": {"rounds": ROUNDS, "seed": 0},
            "privacy": {"mode": "ftrl", "clip": 0.5, "noise_multiplier": 2.0, "tree_rounds": 1},
        }
    )


async def _dom(port: int, page: str, profile) -> str:
    """Open the dashboard at ``#page`` in headless Chromium; return the DOM its script drew from the state
    the server embedded in the page (the live updates that follow over server-sent events are checked
    over HTTP in tests/observe/test_dashboard.py)."""
    proc = await asyncio.create_subprocess_exec(
        BROWSER,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        f"--user-data-dir={profile}",
        "--timeout=8000",
        "--dump-dom",
        f"http://127.0.0.1:{port}/?token={TOKEN}#{page}",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    dom = out.decode("utf-8", "replace")
    assert 'data-ready="1"' in dom, "the dashboard's script drew nothing"
    return dom


def _text(dom: str, id_: str) -> str:
    m = re.search(rf'id="{id_}"[^>]*>([^<]*)<', dom)
    assert m, f"#{id_} not in the page"
    return m.group(1)


def _kib(n: int) -> str:
    """Bytes as the dashboard writes them (below 1 MiB)."""
    assert n < 2**20
    return f"{n / 1024:.1f} KiB"


def _get(port: int, path: str, token: str | None = TOKEN) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", path, headers={"Authorization": f"Bearer {token}"} if token else {})
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    return resp.status, body


def _bad_requests(port: int, seen: dict) -> None:
    seen["no_token"] = [_get(port, p, None)[0] for p in ("/", "/api/runs", "/metrics", "/api/stream")]
    seen["wrong_token"] = _get(port, "/api/runs", "nope")[0]
    for raw in (b"GET /api/run?name=%ZZ&&& HTTP/1.1\r\n\r\n", b"\x00\xff garbage\r\n\r\n", b"POST / HTTP/1.1\r\n\r\n"):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(raw)
            s.recv(4096)
    seen["bodies"] = b"".join(_get(port, p)[1] for p in ("/api/runs", "/api/run?name=.", "/api/live", "/metrics"))


@pytest.mark.skipif(
    BROWSER is None, reason="no chromium: scripts/install.sh installs it (apt-get install chromium) as root"
)
def test_browser_shows_what_the_server_recorded(tmp_path):
    digests = tmp_path / "dashboard_tokens"
    digests.write_text(hashlib.sha256(TOKEN.encode()).hexdigest() + "\n")
    setup, stores, tokens = make_setup(
        tmp_path, _experiment(), devices=8, goal_count=4, min_reports=4, selection_window_s=1.0
    )  # rounds of >= 1 s: the browser looks while they run
    setup = dataclasses.replace(setup, dashboard=DashboardConfig(enabled=True, port=0, token_file=str(digests)))
    state = tmp_path / "state"
    seen: dict = {}

    async def during(server, _port):
        port = server.watch.dashboard.port
        while len(read_records(state / "metrics.jsonl")) < 2:  # the store is locked while the server runs
            await asyncio.sleep(0.1)
        await asyncio.to_thread(_bad_requests, port, seen)  # in a thread: the server's loop keeps running
        t0 = time.monotonic()
        seen["overview"] = await _dom(port, "overview", tmp_path / "profile")
        seen["after_overview"] = read_records(state / "metrics.jsonl")
        seen["devices"] = await _dom(port, "devices", tmp_path / "profile")
        seen["rounds"] = await _dom(port, "rounds", tmp_path / "profile")
        seen["telemetry"] = server.watch.telemetry.snapshot()
        seen["browser_s"] = time.monotonic() - t0
        server.drain()  # the round in flight commits, then the server stops

    server, summary, _ = asyncio.run(run_system(setup, state, stores, tokens, during=during))
    recs = records(state, setup)
    assert summary["rounds_committed"] == len(recs) >= len(seen["after_overview"]) >= 2
    assert [r["round"] for r in recs] == list(range(1, len(recs) + 1))
    assert all(r["attempts"] == 1 for r in recs)  # malformed and unauthenticated requests disturbed no round

    dom = seen["overview"]
    shown_round = int(_text(dom, "stat-round"))
    assert 2 <= shown_round <= len(seen["after_overview"]) < ROUNDS
    assert _text(dom, "stat-status") == "running"
    shown_eps = float(_text(dom, "stat-epsilon"))
    assert shown_eps == pytest.approx(recs[shown_round - 1]["epsilon"], abs=5e-4)  # shown with 3 decimals

    tel = seen["telemetry"]
    assert int(_text(dom, "stat-connected")) == 8 == tel["connected"]  # the fleet's devices, all checked in
    for key in ("selected", "reported", "dropped"):  # the devices of the round shown, as the server recorded them
        assert int(_text(dom, f"stat-{key}")) == recs[shown_round - 1][key]

    dev = seen["devices"]
    assert int(_text(dev, "dev-connected")) == 8 and int(_text(dev, "dev-known")) == tel["known_devices"] == 8
    assert 0 < int(_text(dev, "dev-checkins")) <= tel["counters"]["checkins"][""]
    table = re.search(r'<table id="devices-table">(.*?)</table>', dev, re.S).group(1)
    assert table.count("<tr") == 1 + 8  # a header and one row per device

    # the rounds page: bytes up / down by Aggregator, as each round's record has them
    table = re.search(r'<table id="traffic-table">(.*?)</table>', seen["rounds"], re.S).group(1)
    rows = [re.findall(r"<t[hd][^>]*>([^<]*)</t[hd]>", row) for row in re.findall(r"<tr[^>]*>(.*?)</tr>", table, re.S)]
    assert rows[0] == ["round", "Aggregator 0", "Aggregator 1"]
    assert len(rows) >= 3  # at least two committed rounds shown
    for row in rows[1:]:
        by = recs[int(row[0]) - 1]["bytes_by_aggregator"]
        assert row[1:] == [f"{_kib(by[k][0])} / {_kib(by[k][1])}" for k in ("0", "1")]
        assert sum(by[k][0] for k in by) == recs[int(row[0]) - 1]["bytes_up"] > 0

    assert seen["no_token"] == [401, 401, 401, 401] and seen["wrong_token"] == 401
    names = [n for n, _ in setup.model.build().named_parameters()]
    assert not any(n.encode() in seen["bodies"] for n in names)  # no tensor of the model is ever served
    assert all(len(json.dumps(r)) < 4000 for r in recs)


@pytest.mark.skipif(
    BROWSER is None, reason="no chromium: scripts/install.sh installs it (apt-get install chromium) as root"
)
def test_browser_draws_a_personalized_runs_client_scores_in_their_legend_colours(tmp_path):
    run = tmp_path / "runs" / "ditto"
    run.mkdir(parents=True)
    rows = [
        {"round": r, "test_accuracy": 0.8, "personal_accuracy": 0.9 + r / 100, "local_accuracy": 0.7} for r in (1, 2)
    ]
    run.joinpath("metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    digests = tmp_path / "dashboard_tokens"
    digests.write_text(hashlib.sha256(TOKEN.encode()).hexdigest() + "\n")
    srv = DashboardServer(
        Source(RunFolder(tmp_path / "runs"), None), DashboardConfig(enabled=True, port=0, token_file=str(digests))
    ).start()
    try:
        dom = asyncio.run(_dom(srv.port, "overview", tmp_path / "profile"))
    finally:
        srv.stop()
    chart = re.search(r'<div id="chart-accuracy"[^>]*>(.*?)</div></div>', dom, re.S).group(1)
    lines = {name: colour for colour, name in re.findall(r'class="line (c\d)"[^>]*data-series="([^"]+)"', chart)}
    assert set(lines) == {"test accuracy", "own model, own examples", "global model, own examples"}
    legend = re.findall(r'<rect class="(c\d)"[^>]*>.*?</svg> ([^<]+)</span>', chart, re.S)
    assert {name: colour for colour, name in legend} == lines  # each series' legend has its line's colour
