"""A scriptable server that lies to a device (real gRPC on 127.0.0.1), for the device's hostile-server tests."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc
import numpy as np

from hamrah.device.config import DeviceConfig, DeviceStats
from hamrah.device.eligibility import ScriptedState
from hamrah.device.runtime import DeviceRuntime
from hamrah.device.store import ExampleStore
from hamrah.models import ModelSpec
from hamrah.transport.codec import chunks, encode_params, sha256
from hamrah.transport.plan import Plan
from hamrah.transport.proto import fl_pb2 as pb
from hamrah.transport.proto import fl_pb2_grpc as pb_grpc

SPEC = ModelSpec("logreg", (4,), 3)


def plan_json(**fields) -> bytes:
    """A valid FedAvg plan for :data:`SPEC` as JSON, its top-level ``fields`` replaced."""
    algorithm = {"name": "fedavg", "client_fraction": 0.1, "local_epochs": 1, "batch_size": 5, "lr": 0.1}
    d = json.loads(Plan("train", 1, algorithm, SPEC, seed=0).to_json())
    d.update(fields)
    return json.dumps(d).encode()


def secagg_extra() -> dict:
    """A plan's ``extra`` that asks for secure aggregation (SecAgg, no DP)."""
    from hamrah.pipeline import PipelineSpec
    from hamrah.pipeline.sections import SecureSpec

    return {"pipeline": PipelineSpec(None, None, 0.0, 10, 3, SecureSpec(), None, None).to_json()}


def weights() -> dict:
    """A checkpoint that fits :data:`SPEC`'s model."""
    return {k: v.detach().clone() for k, v in SPEC.build().state_dict().items()}


class HostileServer(pb_grpc.FederatedLearningServicer):
    """Hands out one task (``plan``, ``checkpoint``, announced as ``announce`` bytes, ``deadline_s`` its
    report_deadline_s), then says training is over; ``check_in(n)`` replaces the replies, ``stream(data)``
    the checkpoint's chunks, ``secure(parts)`` plays the server's side of a SecureAggregation stream.
    Records reports."""

    def __init__(
        self,
        plan: bytes | None = None,
        checkpoint: bytes | None = None,
        announce: int | None = None,
        check_in: Callable[[int], pb.CheckInResponse] | None = None,
        stream: Callable[[bytes], AsyncIterator[pb.Chunk]] | None = None,
        secure: Callable[[AsyncIterator[pb.SecAggPart]], AsyncIterator[pb.SecAggPart]] | None = None,
        deadline_s: float = 0.0,
    ):
        self.plan = plan_json() if plan is None else plan
        self.checkpoint = encode_params(weights()) if checkpoint is None else checkpoint
        self.announce = len(self.checkpoint) if announce is None else announce
        self.check_in, self.stream, self.secure, self.deadline_s = check_in, stream, secure, deadline_s
        self.check_ins, self.reports = 0, []

    async def CheckIn(self, request, context):
        self.check_ins += 1
        if self.check_in is not None:
            return self.check_in(self.check_ins)
        if self.check_ins > 1:
            return pb.CheckInResponse(finished=True, message="training is over")
        task = pb.Task(
            task_id="t1",
            round=1,
            plan=self.plan,
            checkpoint_bytes=self.announce,
            checkpoint_sha256=sha256(self.checkpoint),
            report_deadline_s=self.deadline_s,
        )
        return pb.CheckInResponse(task=task)

    async def DownloadCheckpoint(self, request, context):
        pieces = self.stream(self.checkpoint) if self.stream else _plain(self.checkpoint)
        async for piece in pieces:
            yield piece

    async def SecureAggregation(self, request_iterator, context):
        assert self.secure is not None, "a plan with secure aggregation needs secure="
        async for part in self.secure(request_iterator):
            yield part

    async def Report(self, request_iterator, context):
        parts = [p async for p in request_iterator]
        self.reports.append(parts[0].header)
        return pb.ReportResponse(accepted=True, reconnect_after_s=0.01)


async def _plain(data: bytes) -> AsyncIterator[pb.Chunk]:
    for piece in chunks(data):
        yield pb.Chunk(data=piece)


def make_store(path: Path) -> ExampleStore:
    """A store of 20 examples that fit :data:`SPEC`."""
    store = ExampleStore(path)
    rng = np.random.default_rng(0)
    store.add_many(rng.normal(size=(20, 4)).astype(np.float32), rng.integers(0, 3, 20))
    return store


async def serve_one_device(servicer, store: ExampleStore, limit_s: float = 30.0, **cfg) -> DeviceStats:
    """Run one device against ``servicer`` until it stops (or ``limit_s`` passes: TimeoutError)."""
    server = grpc.aio.server()
    pb_grpc.add_FederatedLearningServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    kw = {"retry_s": 0.05, "max_retry_s": 0.3, "poll_s": 0.01, "unreachable_after_s": 3.0, **cfg}
    device = DeviceRuntime(DeviceConfig(server=f"127.0.0.1:{port}", **kw), store, ScriptedState.always())
    try:
        return await asyncio.wait_for(device.run(), limit_s)
    finally:
        await server.stop(0)
