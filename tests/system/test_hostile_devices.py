"""Hostile devices holding valid tokens, next to an honest fleet, over gRPC on loopback: weight inflation
with huge finite values, stalled Report streams, slot squatting (tasks taken and never reported),
stream flooding and call flooding. Every round still commits, finite and within the influence bound,
and each refusal is counted with its reason."""

from __future__ import annotations

import asyncio
import math

import grpc
import pytest
import torch
from tests.server.driver import header as report_header
from tests.system.harness import experiment, make_setup, run_system

from hamrah.transport.codec import chunks, decode_params, encode_params
from hamrah.transport.identity import token_metadata
from hamrah.transport.proto import fl_pb2 as pb
from hamrah.transport.proto import fl_pb2_grpc as pb_grpc

STATE = pb.DeviceState(idle=True, charging=True, unmetered=True)


async def _status(coro) -> grpc.StatusCode:
    try:
        await coro
    except grpc.aio.AioRpcError as e:
        return e.code()
    return grpc.StatusCode.OK


def _stalled_report(stub, meta, task: pb.Task, forever: asyncio.Event, header: bool = True):
    async def parts():
        if not header:  # holds a stream place, not an upload slot
            await forever.wait()
        yield pb.ReportPart(header=report_header(task, b"", 600, {}, update_bytes=10**6))
        await forever.wait()  # never send the payload

    return stub.Report(parts(), metadata=meta)


def _report(stub, meta, task: pb.Task, payload: bytes, n: int):
    async def parts():
        yield pb.ReportPart(header=report_header(task, payload, n, {"train_loss": 0.1}))
        for piece in chunks(payload):
            yield pb.ReportPart(chunk=pb.Chunk(data=piece))

    return stub.Report(parts(), metadata=meta)


async def _hostile(name, stub, meta, coord, seen, forever):
    """Check in for as long as training runs; with a task, misbehave as ``name`` says."""
    while not coord.finished:
        try:
            reply = await stub.CheckIn(
                pb.CheckInRequest(population="default", device_id=name, state=STATE), metadata=meta
            )
        except grpc.aio.AioRpcError as e:
            seen.setdefault(name, []).append(e.code())
            await asyncio.sleep(0.2)
            continue
        if not reply.HasField("task"):
            await asyncio.sleep(min(reply.reconnect_after_s, 0.3))
            continue
        task = reply.task
        if name == "inflator":  # 3e38 everywhere, claiming 1e9 examples
            ckpt = b"".join(
                [
                    c.data
                    async for c in stub.DownloadCheckpoint(pb.CheckpointRequest(task_id=task.task_id), metadata=meta)
                ]
            )
            huge = {
                "delta/" + k: torch.full_like(v, 3e38)
                for k, v in decode_params(ckpt).items()
                if not k.startswith("broadcast/")
            }
            seen.setdefault(name, []).append(await _status(_report(stub, meta, task, encode_params(huge), 10**9)))
        elif name == "staller":  # a stalled upload and a stalled stream (the most allowed), then a third, refused
            # (a second upload of the same task would be refused at once: one Report stream per task)
            held = [_status(_stalled_report(stub, meta, task, forever, header=h)) for h in (True, False)]
            held = [asyncio.ensure_future(c) for c in held]
            await asyncio.sleep(0.3)
            third = await _status(_stalled_report(stub, meta, task, forever))
            ended = await asyncio.gather(*held)
            seen.setdefault(name, []).append(third)
            # a stream still held when the last round commits is closed by the server's stop, not cut
            seen["staller_held"] = [(c, coord.finished) for c in ended]
        # "squatter": holds its task and never answers
        await asyncio.sleep(0.3)


async def _flood(stub, meta, seen):
    codes = await asyncio.gather(
        *(
            _status(
                stub.CheckIn(
                    pb.CheckInRequest(population="default", device_id="flood", state=pb.DeviceState()), metadata=meta
                )
            )
            for _ in range(120)
        )
    )
    seen["flood"] = codes


@pytest.mark.slow
def test_hostile_devices_do_not_stop_or_poison_training(tmp_path):
    exp = experiment(rounds=3, partition="iid")
    setup, stores, tokens = make_setup(
        tmp_path,
        exp,
        devices=8,
        goal_count=4,
        over_selection=1.5,
        min_reports=4,
        max_concurrent_uploads=2,
        stream_timeout_s=2.0,
        reporting_timeout_s=8.0,
        selection_timeout_s=6.0,
        selection_window_s=0.3,
    )
    extra = (tmp_path / "tokens.txt").read_text().split()[8:12]
    seen: dict[str, list] = {}

    async def attackers(server, port):
        forever = asyncio.Event()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            stub = pb_grpc.FederatedLearningStub(ch)
            names = ["inflator", "staller", "squatter1", "squatter2"]
            await asyncio.gather(
                _flood(stub, token_metadata(extra[3]), seen),
                *(
                    _hostile(n, stub, token_metadata(t), server.coordinator, seen, forever)
                    for n, t in zip(names, extra)
                ),
            )
            forever.set()

    server, summary, _ = asyncio.run(run_system(setup, tmp_path / "state", stores, tokens, during=attackers))
    assert summary["rounds_committed"] == 3
    assert all(bool(torch.isfinite(v).all()) for v in server.coordinator.params.values())
    assert summary["final_accuracy"] > 0.7  # unbounded, one 3e38 report made every later round non-finite
    code = grpc.StatusCode
    assert code.RESOURCE_EXHAUSTED in seen["flood"]  # over the rate limit
    refusals = summary["refusals"]
    assert any("RateLimited" in k for k in refusals), refusals
    if "staller_held" in seen:  # it got a task: its stalled streams were cut (or ended by the stop), the third refused
        assert code.RESOURCE_EXHAUSTED in seen["staller"] and any("TooManyStreams" in k for k in refusals)
        for c, finished in seen["staller_held"]:
            assert c == code.DEADLINE_EXCEEDED or (c == code.UNAVAILABLE and finished), seen["staller_held"]
        if any(c == code.DEADLINE_EXCEEDED for c, _ in seen["staller_held"]):
            assert any("stream_timeout" in k for k in refusals), refusals
    assert summary["refused_aggregates"] == 0  # the bound kept every aggregate finite
    assert math.isfinite(summary["wall_s"])
