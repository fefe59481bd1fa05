"""The Report handler of the gRPC service, driven without sockets: one report stream per task at a time,
and a stream that ends without being taken (cut, refused) frees its task for a retry."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from tests.server.driver import header, make_coordinator, open_round, select

from hamrah.server.service import FederatedLearningService
from hamrah.transport.codec import encode_params
from hamrah.transport.identity import anonymous_key
from hamrah.transport.proto import fl_pb2 as pb

PEER = "ipv4:10.0.0.7:4000"
DEVICE = anonymous_key(PEER)  # the key the service gives a caller without a token


class Aborted(Exception):
    pass


class Context:
    """The part of ``grpc.aio.ServicerContext`` the Report handler uses."""

    def __init__(self):
        self.code: grpc.StatusCode | None = None
        self.details = ""

    def invocation_metadata(self):
        return ()

    def peer(self) -> str:
        return PEER

    async def abort(self, code, details):
        self.code, self.details = code, details
        raise Aborted(details)


def _header(task: pb.Task, update_bytes: int) -> pb.ReportPart:
    return pb.ReportPart(header=header(task, b"", 10, update_bytes=update_bytes))


async def _call(service, parts) -> Context:
    ctx = Context()
    try:
        await service.Report(parts, ctx)
    except Aborted:
        pass
    return ctx


def test_a_second_stream_for_a_task_being_received_is_refused_before_taking_an_upload_slot(tmp_path):
    coord = make_coordinator(tmp_path, goal_count=3, over_selection=1.0, min_reports=1, stream_timeout_s=0.5)
    service = FederatedLearningService(coord, [], None)
    payload = encode_params({"delta/" + k: v * 0 for k, v in coord.params.items()})
    release = asyncio.Event()

    async def stalled(task):
        yield _header(task, len(payload))
        await release.wait()  # the header, then nothing (slow loris)

    async def honest(task):
        yield _header(task, len(payload))
        yield pb.ReportPart(chunk=pb.Chunk(data=payload))

    async def go():
        runner = asyncio.ensure_future(coord.run())
        await open_round(coord, 1)
        task = (await select(coord, [DEVICE]))[DEVICE]
        first = asyncio.ensure_future(_call(service, stalled(task)))
        await asyncio.sleep(0.05)
        second = await _call(service, stalled(task))
        assert service._uploads._value == coord.cfg.max_concurrent_uploads - 1  # only the first holds a slot
        cut = await first  # stream_timeout_s
        retried = await _call(service, honest(task))  # the cut stream freed the task: the retry is taken
        release.set()
        runner.cancel()
        return second, cut, retried

    second, cut, retried = asyncio.run(go())
    assert second.code == grpc.StatusCode.INVALID_ARGUMENT and "already being received" in second.details
    assert cut.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert retried.code is None  # accepted
    assert any("already being received" in k for k in service.guard.refusals)
    assert coord._upload_started == {}


def test_a_stalled_upload_is_cut_when_its_round_stops_waiting_not_after_stream_timeout(tmp_path):
    # A selected device stalls after its header: it held an upload slot for stream_timeout_s (120 s by
    # default), past the round's reporting deadline (60 s), so 16 of them blocked a round's uploads.
    coord = make_coordinator(
        tmp_path, goal_count=2, over_selection=1.0, min_reports=1, reporting_timeout_s=0.5, stream_timeout_s=600
    )
    service = FederatedLearningService(coord, [], None)
    release = asyncio.Event()

    async def stalled(task):
        yield _header(task, 100)
        await release.wait()

    async def go():
        runner = asyncio.ensure_future(coord.run())
        await open_round(coord, 1)
        task = (await select(coord, [DEVICE]))[DEVICE]
        cut = await asyncio.wait_for(_call(service, stalled(task)), 60)  # a bound on waiting, not a timing check
        release.set()
        runner.cancel()
        return cut

    cut = asyncio.run(go())
    assert cut.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "still open when its round stopped waiting for reports" in cut.details
    assert service._uploads._value == coord.cfg.max_concurrent_uploads  # the slot is free again


@pytest.mark.parametrize("bad", [b"\x00garbage", b""])
def test_a_refused_upload_frees_its_task_for_a_retry(tmp_path, bad):
    coord = make_coordinator(tmp_path, goal_count=3, over_selection=1.0, min_reports=1)
    service = FederatedLearningService(coord, [], None)
    payload = encode_params({"delta/" + k: v * 0 for k, v in coord.params.items()})

    async def parts(task, data):
        yield _header(task, len(data))
        yield pb.ReportPart(chunk=pb.Chunk(data=data))

    async def go():
        runner = asyncio.ensure_future(coord.run())
        await open_round(coord, 1)
        task = (await select(coord, [DEVICE]))[DEVICE]
        refused = await _call(service, parts(task, bad))
        taken = await _call(service, parts(task, payload))
        runner.cancel()
        return refused, taken

    refused, taken = asyncio.run(go())
    assert refused.code == grpc.StatusCode.INVALID_ARGUMENT
    assert taken.code is None and coord._upload_started == {}


def test_a_flood_of_bad_check_ins_is_rate_limited_and_logged_once(tmp_path, caplog):
    """Check-ins for another population were refused before the rate limit was charged: a device could
    send them as fast as it liked, each one a warning in the log."""
    coord = make_coordinator(tmp_path, rate_per_s=1.0, rate_burst=5)
    service = FederatedLearningService(coord, [], None)
    request = pb.CheckInRequest(population="elsewhere", device_id="flood")

    async def go():
        codes = []
        for _ in range(100):
            ctx = Context()
            try:
                await service.CheckIn(request, ctx)
            except Aborted:
                pass
            codes.append(ctx.code)
        return codes

    with caplog.at_level("WARNING", logger="hamrah.server"):
        codes = asyncio.run(go())
    assert codes[:5] == [grpc.StatusCode.NOT_FOUND] * 5
    assert codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) >= 90
    assert caplog.text.count("refused a check-in") <= 7  # the burst, then one line for the flood
    assert sum(service.guard.refusals.values()) == 100  # every refusal counted by reason
