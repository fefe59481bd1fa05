"""Run a real server and real device runtimes over gRPC on 127.0.0.1, in one asyncio loop."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

from hamrah.device.config import DeviceConfig
from hamrah.device.fleet import Churn, make_tokens, run_fleet
from hamrah.experiments.config import from_dict
from hamrah.experiments.serve import import_stores, server_setup
from hamrah.server.app import FLServer
from hamrah.server.config import server_config
from hamrah.server.state import ServerStore

FAST = {
    "selection_timeout_s": 15.0,
    "reporting_timeout_s": 60.0,
    "checkin_hold_s": 0.5,
    "reconnect_min_s": 0.05,
    "reconnect_max_s": 0.5,
    "retry_delay_s": 0.1,
}


def experiment(rounds=3, num_clients=100, partition="shards", algorithm=None, **run):
    return from_dict(
        {
            "data": {"dataset": "mnist", "partition": partition, "num_clients": num_clients},
            "model": {"name": "2nn"},
            "algorithm": algorithm
            or {"name": "fedavg", "client_fraction": 0.1, "local_epochs": 1, "batch_size": 10, "lr": 0.1},
            "run": {"rounds": rounds, "seed": 0, **run},
        }
    )


def make_setup(tmp: Path, exp, devices: int, **server):
    tokens = make_tokens(tmp / "tokens.txt", max(devices, 8) + 4)
    srv = server_config({**FAST, "tokens_file": str(tmp / "tokens.txt"), **server})
    setup = server_setup(exp, srv)
    stores = import_stores(exp, tmp / "stores", list(range(devices)))
    return setup, stores, tokens[:devices]


def device_config(port: int, **kw) -> DeviceConfig:
    base = DeviceConfig(server=f"127.0.0.1:{port}", retry_s=0.05, max_retry_s=0.3, poll_s=0.01, unreachable_after_s=3.0)
    return dataclasses.replace(base, **kw)


async def run_system(
    setup,
    state_dir,
    stores,
    tokens,
    churn=Churn(),
    during=None,
    device_kw=None,
    client_keys=None,
    task=None,
    on_round=None,
):
    """Serve until all rounds commit while a fleet trains; return (server, summary, fleet stats)."""
    server = FLServer(setup, state_dir)
    port = await server.start(0)
    base = device_config(port, population=setup.server.population, **(device_kw or {}))
    fleet = asyncio.ensure_future(run_fleet(base, stores, tokens, churn, client_keys, task, on_round))
    extra = asyncio.ensure_future(during(server, port)) if during else None
    summary = await asyncio.wait_for(server.serve(linger_s=0.8), 240)  # fail, do not hang, if rounds stall
    try:
        stats = await asyncio.wait_for(fleet, 10)
    except asyncio.TimeoutError:
        stats = None
    if extra is not None:
        await asyncio.wait_for(extra, 10)
    return server, summary, stats


def serve_cohort(tmp: Path, exp, cohort: list[int], **server):
    """Serve ``exp`` to one device per client of ``cohort`` (keyed by client id, all selected every round,
    as the simulator's cohort); return (server, summary)."""
    n = len(cohort)
    setup, _, _ = make_setup(tmp, exp, devices=0, goal_count=n, over_selection=1.0, min_reports=n, **server)
    stores = import_stores(exp, tmp / "stores", cohort)
    tokens = make_tokens(tmp / "tokens.txt", n)
    srv, summary, _ = asyncio.run(run_system(setup, tmp / "state", stores, tokens, client_keys=cohort))
    return srv, summary


def records(state_dir, setup) -> list[dict]:
    """Return the committed round records in a server's state folder."""
    store = ServerStore(state_dir, setup.config)
    try:
        return store.committed_rounds()
    finally:
        store.close()
