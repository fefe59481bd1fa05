"""Malformed, NaN, oversized, stale and unauthenticated messages are refused with a clear status,
and the round goes on unharmed."""

from __future__ import annotations

import asyncio
import json
import math

import grpc
import torch
from tests.system.harness import experiment, make_setup, run_system

from hamrah.transport.codec import chunks, decode_params, encode_params
from hamrah.transport.identity import token_metadata
from hamrah.transport.proto import fl_pb2 as pb
from hamrah.transport.proto import fl_pb2_grpc as pb_grpc


async def _status(call) -> tuple[grpc.StatusCode, str]:
    try:
        await call
    except grpc.aio.AioRpcError as e:
        return e.code(), e.details()
    return grpc.StatusCode.OK, ""


def _report(
    stub, meta, task_id, rnd, payload: bytes, *, status=pb.COMPLETED, n=10, metrics=b"{}", announced=None, header=True
):
    async def parts():
        if header:
            yield pb.ReportPart(
                header=pb.ReportHeader(
                    task_id=task_id,
                    round=rnd,
                    status=status,
                    num_examples=n,
                    metrics=metrics,
                    update_bytes=announced if announced is not None else len(payload),
                )
            )
        for piece in chunks(payload):
            yield pb.ReportPart(chunk=pb.Chunk(data=piece))

    return stub.Report(parts(), metadata=meta)


def test_bad_messages_are_refused_and_the_round_completes(tmp_path):
    setup, stores, tokens = make_setup(
        tmp_path,
        experiment(rounds=1),
        devices=3,
        goal_count=4,
        over_selection=1.0,
        min_reports=3,
        revoked_file=str(tmp_path / "revoked.txt"),
    )
    all_tokens = (tmp_path / "tokens.txt").read_text().split()
    mine, revoked = all_tokens[5], all_tokens[6]
    (tmp_path / "revoked.txt").write_text(revoked + "\n")
    seen: dict[str, tuple] = {}

    async def attacker(server, port):
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            stub = pb_grpc.FederatedLearningStub(ch)
            req = pb.CheckInRequest(
                population="default",
                device_id="mallory",
                state=pb.DeviceState(idle=True, charging=True, unmetered=True),
            )
            seen["no token"] = await _status(stub.CheckIn(req))
            seen["unknown token"] = await _status(stub.CheckIn(req, metadata=token_metadata("not-a-token")))
            seen["revoked token"] = await _status(stub.CheckIn(req, metadata=token_metadata(revoked)))
            meta = token_metadata(mine)
            seen["wrong population"] = await _status(
                stub.CheckIn(pb.CheckInRequest(population="other", state=req.state), metadata=meta)
            )
            reply = await stub.CheckIn(req, metadata=meta)
            while not reply.HasField("task"):
                await asyncio.sleep(0.05)
                reply = await stub.CheckIn(req, metadata=meta)
            task = reply.task
            seen["someone else's checkpoint"] = await _status(
                _collect(stub.DownloadCheckpoint(pb.CheckpointRequest(task_id="f" * 32), metadata=meta))
            )
            ckpt = b"".join(
                [
                    c.data
                    async for c in stub.DownloadCheckpoint(pb.CheckpointRequest(task_id=task.task_id), metadata=meta)
                ]
            )
            good = {"delta/" + k: torch.zeros_like(v) for k, v in decode_params(ckpt).items()}  # FedAvg's statistics
            nan = dict(good)
            nan["delta/fc1.weight"] = torch.full_like(good["delta/fc1.weight"], math.nan)
            shape = dict(good)
            shape["delta/fc1.bias"] = torch.zeros(3)
            dtype = {k: v.double() for k, v in good.items()}
            extra = {**good, "evil": torch.zeros(1)}
            t, r = task.task_id, task.round
            cases = {  # one at a time: a second stream of a task being received is refused as such
                "NaN": lambda: _report(stub, meta, t, r, encode_params(nan)),
                "wrong shape": lambda: _report(stub, meta, t, r, encode_params(shape)),
                "wrong dtype": lambda: _report(stub, meta, t, r, encode_params(dtype)),
                "unexpected tensor": lambda: _report(stub, meta, t, r, encode_params(extra)),
                "garbage bytes": lambda: _report(stub, meta, t, r, b"\x00garbage" * 100),
                "oversized": lambda: _report(stub, meta, t, r, b"", announced=10**10),
                "length mismatch": lambda: _report(stub, meta, t, r, encode_params(good), announced=7),
                "bad metrics": lambda: _report(stub, meta, t, r, encode_params(good), metrics=b'{"loss": "NaN"}'),
                "huge integer metric": lambda: _report(  # no float holds it: was an OverflowError, UNKNOWN
                    stub, meta, t, r, encode_params(good), metrics=b'{"train_loss": 1' + b"0" * 400 + b"}"
                ),
                "zero examples": lambda: _report(stub, meta, t, r, encode_params(good), n=0),
                "wrong round": lambda: _report(stub, meta, t, r + 7, encode_params(good)),
                "no header": lambda: _report(stub, meta, t, r, encode_params(good), header=False),
                "unknown task": lambda: _report(stub, meta, "0" * 32, r, encode_params(good)),
            }
            for name, call in cases.items():
                seen[name] = await _status(call())
            seen["failed"] = await _status(_report(stub, meta, t, r, b"", status=pb.FAILED))
            seen["second report"] = await _status(_report(stub, meta, t, r, encode_params(good)))
            while server.coordinator.last_round < 1:
                await asyncio.sleep(0.02)
            seen["stale"] = await _status(_report(stub, meta, t, r, encode_params(good)))

    server, summary, _ = asyncio.run(run_system(setup, tmp_path / "state", stores, tokens, during=attacker))
    code = grpc.StatusCode
    for name in ("no token", "unknown token", "revoked token"):
        assert seen[name][0] == code.UNAUTHENTICATED, name
    assert seen["wrong population"][0] == code.NOT_FOUND
    assert seen["someone else's checkpoint"][0] == code.FAILED_PRECONDITION
    expected_words = {
        "NaN": "NaN",
        "wrong shape": "shape",
        "wrong dtype": "dtype",
        "unexpected tensor": "evil",
        "garbage bytes": "safetensors",
        "oversized": "limit",
        "length mismatch": "announced",
        "bad metrics": "finite",
        "huge integer metric": "finite",
        "zero examples": "num_examples",
        "wrong round": "round 8",
        "no header": "header",
        "second report": "already failed",
    }
    for name, word in expected_words.items():
        assert seen[name][0] == code.INVALID_ARGUMENT and word in seen[name][1], (name, seen[name])
    assert seen["unknown task"][0] == code.FAILED_PRECONDITION
    assert seen["failed"][0] == code.OK
    assert seen["stale"][0] == code.FAILED_PRECONDITION
    rec = json.loads((tmp_path / "state" / "metrics.jsonl").read_text().splitlines()[0])
    assert rec["reported"] == 3 and rec["failed"] == 1 and rec["refused"] >= 13
    assert all(torch.isfinite(v).all() for v in server.coordinator.params.values())
    assert summary["rounds_committed"] == 1 and summary["refused_messages"] >= 15


async def _collect(stream):
    return [c async for c in stream]
