"""Drive a real Coordinator (real store, model, algorithm) without sockets: devices are strings, reports
are the protobuf headers and safetensors payloads the gRPC service would hand over."""

from __future__ import annotations

import asyncio
import json

from tests.system.harness import FAST, experiment

from hamrah.server.config import server_config
from hamrah.server.coordinator import Coordinator
from hamrah.server.state import ServerStore
from hamrah.transport.codec import encode_params
from hamrah.transport.proto import fl_pb2 as pb

FAST_COORD = {
    **FAST,
    "selection_timeout_s": 5.0,
    "reporting_timeout_s": 5.0,
    "selection_window_s": 0.0,
    "retry_delay_s": 0.0,
}


def make_coordinator(tmp, rounds=1, algorithm=None, base: dict = FAST_COORD, **server) -> Coordinator:
    """A Coordinator on ``tmp`` with the server settings ``base`` (fast timers) updated by ``server``."""
    from hamrah.experiments.serve import server_setup

    setup = server_setup(experiment(rounds=rounds, algorithm=algorithm), server_config({**base, **server}))
    store = ServerStore(tmp, setup.config)
    return Coordinator(
        setup.server,
        setup.run,
        setup.algorithm,
        setup.algorithm_plan,
        setup.model,
        setup.test_data,
        store,
        setup.goal,
        setup.ignore_index,
    )


async def open_round(coord: Coordinator, round_idx: int):
    while coord.current is None or coord.current.round != round_idx or not coord.current.selection_open:
        await asyncio.sleep(0.005)
    return coord.current


async def select(coord: Coordinator, devices: list[str]) -> dict[str, pb.Task]:
    tasks = await asyncio.gather(*(coord.request(d) for d in devices))
    return {d: t for d, t in zip(devices, tasks) if t is not None}


def header(
    task: pb.Task, payload: bytes, n: int, metrics: dict | None = None, update_bytes: int | None = None
) -> pb.ReportHeader:
    """A COMPLETED report's header for ``task`` announcing ``payload`` (or ``update_bytes``, for a stream
    that sends another size or stalls)."""
    return pb.ReportHeader(
        task_id=task.task_id,
        round=task.round,
        status=pb.COMPLETED,
        num_examples=n,
        metrics=json.dumps({"train_loss": 0.5} if metrics is None else metrics).encode(),
        update_bytes=len(payload) if update_bytes is None else update_bytes,
    )


def as_statistics(delta: dict) -> dict:
    """Return a model delta as the statistics FedAvg-like algorithms report (``"delta/<param>"``); names
    that already carry a namespace are kept."""
    return {k if "/" in k else "delta/" + k: v for k, v in delta.items()}


def send(coord: Coordinator, device: str, task: pb.Task, delta, n: int, metrics: dict | None = None) -> str:
    payload = encode_params(as_statistics(delta)) if delta is not None else b""
    return coord.report(device, header(task, payload, n, metrics), payload)


async def one_round(coord: Coordinator, round_idx: int, reports: dict[str, tuple]) -> None:
    """Select every device of ``reports`` for round ``round_idx`` and send its (delta, n) report."""
    await open_round(coord, round_idx)
    tasks = await select(coord, list(reports))
    for device, (delta, n) in reports.items():
        send(coord, device, tasks[device], delta, n)
