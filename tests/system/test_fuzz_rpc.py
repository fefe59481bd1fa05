"""A gRPC fuzzer over every RPC of the real server: random, truncated and mutated protobufs and mutated
safetensors headers, from an authenticated device holding a live task. Each message is answered with a
clear status (never UNKNOWN or INTERNAL, which is what an exception escaping a handler gives), every
refusal is counted with its reason, nothing is committed from them, and the server keeps serving."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import threading
import time

import grpc
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.server.driver import header as report_header
from tests.system.harness import experiment, make_setup

from hamrah.server.app import FLServer
from hamrah.transport.codec import decode_params, encode_params
from hamrah.transport.identity import token_metadata
from hamrah.transport.proto import fl_pb2 as pb

SERVICE = "/hamrah.v1.FederatedLearning/"
CLEAR = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.CANCELLED,
}
STATE = pb.DeviceState(idle=True, charging=True, unmetered=True)


class _Errors(logging.Handler):
    def __init__(self):
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)


class Running:
    """A real FLServer serving in a background thread, with one device's token and live task."""

    def __init__(self, tmp):
        exp = experiment(rounds=1)
        # A round that stays in selection for the whole test: nothing can commit behind our back.
        self.setup, _, _ = make_setup(
            tmp,
            exp,
            devices=0,
            goal_count=20,
            over_selection=1.0,
            selection_timeout_s=600.0,
            rate_per_s=10_000.0,
            rate_burst=10_000,
            max_streams_per_device=64,
            stream_timeout_s=5.0,
            max_concurrent_uploads=4,  # one stream per task: held by the stalled uploads of 4 devices' tasks
        )
        self.tmp = tmp
        self.token = (tmp / "tokens.txt").read_text().split()[0]
        self.errors = _Errors()  # every ERROR logged while fuzzing (gRPC logs a traceback per escaped exception)
        logging.getLogger().addHandler(self.errors)
        self.server = FLServer(self.setup, tmp / "state")
        self.loop = asyncio.new_event_loop()
        self.port = self.loop.run_until_complete(self.server.start(0))
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.port}")
        self.meta = token_metadata(self.token)
        self.task = self._task()

    def _serve(self):
        asyncio.set_event_loop(self.loop)
        self.serving = self.loop.create_task(self.server.serve(linger_s=0.0))
        try:
            self.loop.run_until_complete(self.serving)
        except (asyncio.CancelledError, Exception):  # stopped by close()
            pass

    def _task(self, meta=None) -> pb.Task:
        checkin = self.channel.unary_unary(
            SERVICE + "CheckIn",
            request_serializer=pb.CheckInRequest.SerializeToString,
            response_deserializer=pb.CheckInResponse.FromString,
        )
        for _ in range(200):
            reply = checkin(
                pb.CheckInRequest(population="default", device_id="fuzzer", state=STATE), metadata=meta or self.meta
            )
            if reply.HasField("task"):
                return reply.task
        raise AssertionError("the fuzzing device never got a task")

    def raw(self, method: str, kind: str):
        ident = lambda b: b
        make = {
            "uu": self.channel.unary_unary,
            "us": self.channel.unary_stream,
            "su": self.channel.stream_unary,
            "ss": self.channel.stream_stream,
        }[kind]
        return make(SERVICE + method, request_serializer=ident, response_deserializer=ident)

    def close(self):
        logging.getLogger().removeHandler(self.errors)
        self.channel.close()
        self.loop.call_soon_threadsafe(self.serving.cancel)
        self.thread.join(30)


@pytest.fixture(scope="module")
def running(tmp_path_factory):
    r = Running(tmp_path_factory.mktemp("fuzz"))
    yield r
    r.close()


def _code(call) -> grpc.StatusCode:
    try:
        result = call()
        if hasattr(result, "__iter__") and not isinstance(result, bytes):
            list(result)
    except grpc.RpcError as e:
        return e.code()
    return grpc.StatusCode.OK


def _mutate(data: bytes, cuts: list[int], flips: list[tuple[int, int]]) -> bytes:
    out = bytearray(data)
    for pos, byte in flips:
        if out:
            out[pos % len(out)] = byte
    for cut in cuts:
        out = out[: cut % (len(out) + 1)]
    return bytes(out)


mutations = st.tuples(
    st.lists(st.integers(0, 10**6), max_size=1),
    st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=6),
)


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    data=st.binary(max_size=300),
    method=st.sampled_from(["CheckIn", "DownloadCheckpoint", "Report", "SecureAggregation"]),
)
def test_random_bytes_on_every_rpc_get_a_clear_status(running, data, method):
    kind = {"CheckIn": "uu", "DownloadCheckpoint": "us", "Report": "su", "SecureAggregation": "ss"}[method]
    call = running.raw(method, kind)
    if kind in ("uu", "us"):
        code = _code(lambda: call(data, metadata=running.meta, timeout=10))
    else:
        code = _code(lambda: call(iter([data, data[::-1]]), metadata=running.meta, timeout=10))
    assert code in CLEAR, (method, code)


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(m=mutations, which=st.sampled_from(["checkin", "checkpoint", "header"]))
def test_truncated_and_mutated_protobufs_get_a_clear_status(running, m, which):
    t = running.task
    if which == "checkin":
        msg = pb.CheckInRequest(population="default", device_id="fuzzer", state=STATE).SerializeToString()
        call = running.raw("CheckIn", "uu")
        code = _code(lambda: call(_mutate(msg, *m), metadata=running.meta, timeout=10))
    elif which == "checkpoint":
        msg = pb.CheckpointRequest(task_id=t.task_id).SerializeToString()
        call = running.raw("DownloadCheckpoint", "us")
        code = _code(lambda: call(_mutate(msg, *m), metadata=running.meta, timeout=10))
    else:
        header = pb.ReportPart(
            header=pb.ReportHeader(
                task_id=t.task_id, round=t.round, status=pb.COMPLETED, num_examples=10, metrics=b"{}", update_bytes=8
            )
        )
        call = running.raw("Report", "su")
        parts = [
            _mutate(header.SerializeToString(), *m),
            pb.ReportPart(chunk=pb.Chunk(data=b"x" * 8)).SerializeToString(),
        ]
        code = _code(lambda: call(iter(parts), metadata=running.meta, timeout=10))
    assert code in CLEAR, (which, code)


def _report_parts(task: pb.Task, payload: bytes, metrics: bytes = b'{"train_loss": 0.5}', n: int = 10):
    header = pb.ReportHeader(
        task_id=task.task_id,
        round=task.round,
        status=pb.COMPLETED,
        num_examples=n,
        metrics=metrics,
        update_bytes=len(payload),
    )
    return [
        pb.ReportPart(header=header).SerializeToString(),
        pb.ReportPart(chunk=pb.Chunk(data=payload)).SerializeToString(),
    ]


@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(m=mutations)
def test_mutated_safetensors_headers_are_refused(running, m):
    """Flip and cut bytes inside the safetensors JSON header of a well-formed zero update: the report is
    refused (or, if the mutation left a valid matching update, accepted once); never a crash."""
    ckpt = b"".join(
        pb.Chunk.FromString(c).data
        for c in running.raw("DownloadCheckpoint", "us")(
            pb.CheckpointRequest(task_id=running.task.task_id).SerializeToString(), metadata=running.meta, timeout=10
        )
    )
    zeros = {"delta/" + k: torch.zeros_like(v) for k, v in decode_params(ckpt).items()}  # FedAvg's statistics
    good = encode_params(zeros)
    size = int.from_bytes(good[:8], "little")
    cuts, flips = m
    head = _mutate(good[8 : 8 + size], [], [(8 + p % size, b) for p, b in flips]) if flips else good[8 : 8 + size]
    payload = good[:8] + head + good[8 + size :]
    if cuts:
        payload = payload[: cuts[0] % (len(payload) + 1)]
    code = _code(
        lambda: running.raw("Report", "su")(
            iter(_report_parts(running.task, payload)), metadata=running.meta, timeout=10
        )
    )
    assert code in CLEAR


@pytest.mark.parametrize(
    "metrics",
    [
        b'{"accuracy": 1e300, "loss": 0.1}',
        b'{"train_loss": -5}',
        b'{"train_loss": NaN}',
        b'{"train_loss": Infinity}',
        b"[" * 100_000 + b"]" * 100_000,
        json.dumps({f"m{i}": 1 for i in range(1000)}).encode(),
    ],
)
def test_metric_injection_is_refused(running, metrics):
    code = _code(
        lambda: running.raw("Report", "su")(
            iter(_report_parts(running.task, b"", metrics)), metadata=running.meta, timeout=10
        )
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT


def test_a_report_for_no_task_is_refused_while_every_upload_slot_is_held(running):
    """All upload slots held by stalled streams of real tasks (one per task: a second stream of a task
    is refused at once): a report naming no task of this device is answered at once (its task is checked
    before a slot is taken), and the stalled streams are cut at stream_timeout_s, freeing the slots."""
    release = threading.Event()
    slots = running.setup.server.max_concurrent_uploads
    tokens = (running.tmp / "tokens.txt").read_text().split()[1 : 1 + slots]  # other devices, fresh tasks
    metas = [token_metadata(t) for t in tokens]
    headers = []
    for meta in metas:
        task = running._task(meta)
        headers.append(pb.ReportPart(header=report_header(task, b"", 10, {}, update_bytes=10**6)).SerializeToString())

    def stalled(header):
        yield header
        release.wait(30)

    call = running.raw("Report", "su")
    held = [call.future(stalled(h), metadata=m, timeout=30) for h, m in zip(headers, metas)]
    duplicate = _code(lambda: call(stalled(headers[0]), metadata=metas[0], timeout=10))
    time.sleep(0.5)
    bogus = _report_parts(pb.Task(task_id="0" * 32, round=running.task.round), b"")
    start = time.monotonic()
    assert _code(lambda: call(iter(bogus), metadata=running.meta, timeout=10)) == grpc.StatusCode.FAILED_PRECONDITION
    assert time.monotonic() - start < 3.0  # not queued behind the stalled uploads (cut after 5 s)
    codes = set()
    for f in held:
        try:
            f.result(timeout=30)
        except grpc.RpcError as e:
            codes.add(e.code())
    release.set()
    assert codes == {grpc.StatusCode.DEADLINE_EXCEEDED}  # cut by the server, slots freed
    assert duplicate == grpc.StatusCode.INVALID_ARGUMENT  # a second stream of a task being received


def test_after_the_fuzzing_the_server_serves_and_counted_every_refusal_with_a_reason(running):
    # its own burst of garbage: under pytest-xdist this test may get a fresh server (the module's
    # fixture is rebuilt when another module's tests run in between on the same worker)
    rng = np.random.default_rng(7)
    for i in range(24):
        data = rng.bytes(int(rng.integers(1, 200)))
        if i % 2:
            _code(lambda d=data: running.raw("CheckIn", "uu")(d, metadata=running.meta, timeout=10))
        else:
            _code(lambda d=data: running.raw("Report", "su")(iter([d, d]), metadata=running.meta, timeout=10))
    assert [r.getMessage() for r in running.errors.records] == []  # no traceback, no error logged
    refusals = running.server.service.guard.refusals
    assert sum(refusals.values()) >= 20 and all(isinstance(k, str) and k for k in refusals)
    assert any("not a valid protobuf" in k or "MALFORMED" in k or "CheckIn" in k for k in refusals), refusals
    coord = running.server.coordinator
    assert coord.store.committed_rounds() == []  # nothing committed from hostile input
    assert all(bool(torch.isfinite(v).all()) for v in coord.params.values())
    checkin = running.raw("CheckIn", "uu")
    reply = pb.CheckInResponse.FromString(
        checkin(
            pb.CheckInRequest(population="default", device_id="later", state=STATE).SerializeToString(),
            metadata=running.meta,
            timeout=10,
        )
    )
    assert not reply.finished and math.isfinite(reply.reconnect_after_s)


def test_a_device_cannot_grow_the_refusal_table_with_its_own_values(running):
    # every refusal below carries the device's own number or id in its message; before, each was
    # counted under a reason of its own (the summary and /metrics grew by one label per call)
    call = running.raw("Report", "su")
    refusals = running.server.service.guard.refusals
    before, total = set(refusals), sum(refusals.values())
    for i in range(12):
        bad = _report_parts(running.task, b"", n=10**9 + i)  # num_examples out of range
        _code(lambda b=bad: call(iter(b), metadata=running.meta, timeout=10))
        time.sleep(0.1)  # under the rate limit: each one is refused for what it holds
    assert sum(refusals.values()) == total + 12  # each refused and counted
    assert len(set(refusals) - before) <= 2, set(refusals) - before  # was one reason per call
