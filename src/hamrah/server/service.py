"""The gRPC face of the server: authenticates every call, validates every message, and hands it to
a Selector or the Coordinator. A refused message gets a clear status; the round goes on."""

from __future__ import annotations

import asyncio
import logging
import math
import zlib

import grpc

from hamrah.core.errors import AuthError, ProtocolError
from hamrah.server.coordinator import Coordinator, LateReport
from hamrah.server.guard import Guard, Malformed, RateLimited, TooManyStreams, reason_of
from hamrah.server.secure import DroppedFromRound, SecureRoundAborted
from hamrah.server.selector import Selector
from hamrah.server.shell import report_of
from hamrah.transport.certs import peer_cert_sha256
from hamrah.transport.codec import chunks, join_chunks
from hamrah.transport.identity import DEVICE_HEADER, anonymous_key
from hamrah.transport.proto import fl_pb2 as pb
from hamrah.transport.proto import fl_pb2_grpc as pb_grpc
from hamrah.transport.security import TokenRegistry

log = logging.getLogger("hamrah.server")
MAX_FIELD = 256  # longest population / version / device id string accepted


class FederatedLearningService(pb_grpc.FederatedLearningServicer):
    def __init__(self, coordinator: Coordinator, selectors: list[Selector], tokens: TokenRegistry | None):
        self.coordinator, self.selectors, self.tokens = coordinator, selectors, tokens
        self.refused = 0
        # Updates received at once: bounds the memory of buffered payloads whatever the number of
        # devices; the others wait under gRPC flow control.
        self._uploads = asyncio.Semaphore(coordinator.cfg.max_concurrent_uploads)
        cfg = coordinator.cfg
        self.guard = Guard(cfg.rate_per_s, cfg.rate_burst, cfg.max_streams_per_device)
        self.telemetry = None  # hamrah.observe.Telemetry when the dashboard is on: one call per event

    async def _device(self, context: grpc.aio.ServicerContext, method: str, claimed: str = "") -> str:
        """Return the caller's device key, the same on every call of one device; or end the call with
        UNAUTHENTICATED, naming why (the reason is counted in ``tokens.refusals``)."""
        if self.tokens is None:
            md = dict((k, v) for k, v in context.invocation_metadata() or () if isinstance(v, str))
            return anonymous_key(md.get(DEVICE_HEADER, "")[:MAX_FIELD] or claimed or context.peer())
        try:
            return self.tokens.verify(
                context.invocation_metadata(), method, peer_cert_sha256(context.auth_context())
            ).key
        except AuthError as e:
            self.refused += 1
            if self.telemetry is not None:
                self.telemetry.refused("unauthenticated", reason_of(e), self._round())
            log.warning("refused a %s call from %s: %s", method, context.peer(), e)
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, str(e))

    async def _refuse(self, context, device: str, what: str, err: ProtocolError, code=grpc.StatusCode.INVALID_ARGUMENT):
        self.refused += 1
        reason = self.guard.count(reason_of(err))
        if self.telemetry is not None:
            self.telemetry.refused(device, reason, self._round())
        self.coordinator.refused(device, reason)
        log.warning("refused %s from device %s: %s", what, self.coordinator.who(device), err)
        await context.abort(code, str(err))

    async def _malformed(self, context, method: str) -> None:
        """Refuse a request that did not parse (before authentication: there is nothing to read)."""
        await self._refuse(
            context,
            context.peer(),
            f"a {method} call",
            ProtocolError(f"{method}: the request is not a valid protobuf message; expected hamrah.v1 {method}"),
        )

    async def _charge(self, context, device: str, what: str) -> None:
        """Charge one call to ``device``'s rate limit; refuse it with RESOURCE_EXHAUSTED when over."""
        try:
            self.guard.call(device, asyncio.get_running_loop().time())
        except RateLimited as e:
            if not self.guard.first(device, "rate"):  # one log line per flooding device, all counted
                self.refused += 1
                reason = self.guard.count(reason_of(e))
                if self.telemetry is not None:
                    self.telemetry.refused(device, reason, self._round())
                await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(e))
            await self._refuse(context, device, what, e, grpc.StatusCode.RESOURCE_EXHAUSTED)

    async def CheckIn(self, request: pb.CheckInRequest, context) -> pb.CheckInResponse:
        if isinstance(request, Malformed):
            await self._malformed(context, "CheckIn")
        device = await self._device(context, "CheckIn", request.device_id[:MAX_FIELD])
        await self._charge(context, device, "a check-in")  # first: a flood of bad check-ins is limited too
        for name in ("population", "runtime_version", "device_id", "session"):
            if len(getattr(request, name)) > MAX_FIELD:
                await self._refuse(
                    context, device, "a check-in", ProtocolError(f"{name} longer than {MAX_FIELD} characters")
                )
        if request.population != self.coordinator.cfg.population:
            await self._refuse(
                context,
                device,
                "a check-in",
                ProtocolError(
                    f"population {request.population!r} is not served here "
                    f"(expected {self.coordinator.cfg.population!r})"
                ),
                grpc.StatusCode.NOT_FOUND,
            )
        self.coordinator.named(device, request.device_id, request.session)
        selector = self.selectors[zlib.crc32(device.encode()) % len(self.selectors)]
        if self.telemetry is None:
            return await selector.check_in(device, request)
        state = request.state
        self.telemetry.checkin(device, state.idle and state.charging and state.unmetered)
        response = await selector.check_in(device, request)
        self.telemetry.answered(device, _outcome(response), response.task.round or self._round())
        return response

    async def DownloadCheckpoint(self, request: pb.CheckpointRequest, context) -> None:
        """Stream a live task's checkpoint; a download open past ``stream_timeout_s`` is cut."""
        if isinstance(request, Malformed):
            await self._malformed(context, "DownloadCheckpoint")
        device = await self._device(context, "DownloadCheckpoint")
        await self._charge(context, device, "a checkpoint request")
        try:
            data = self.coordinator.checkpoint(request.task_id, device)
        except ProtocolError as e:
            await self._refuse(context, device, "a checkpoint request", e, grpc.StatusCode.FAILED_PRECONDITION)
        timeout = self.coordinator.cfg.stream_timeout_s
        try:
            with self.guard.stream(device):
                async with asyncio.timeout(timeout):
                    for piece in chunks(data):
                        await context.write(pb.Chunk(data=piece))
            self.coordinator.downloaded(request.task_id, device)
            if self.telemetry is not None:
                self.telemetry.transferred("down", len(data))
        except TooManyStreams as e:
            await self._refuse(context, device, "a checkpoint request", e, grpc.StatusCode.RESOURCE_EXHAUSTED)
        except TimeoutError:
            await self._refuse(
                context,
                device,
                "a checkpoint download",
                ProtocolError(
                    f"stream_timeout: download open longer than server.stream_timeout_s = {timeout:g} s; cut"
                ),
                grpc.StatusCode.DEADLINE_EXCEEDED,
            )

    async def Report(self, request_iterator, context) -> pb.ReportResponse:
        """Take one report: the header is checked against the device's task before an upload slot is
        taken; the stream is cut after ``stream_timeout_s``."""
        device = await self._device(context, "Report")
        await self._charge(context, device, "a report")
        timeout = self.coordinator.cfg.stream_timeout_s
        ends = asyncio.get_running_loop().time() + timeout
        limit = asyncio.timeout_at(ends)
        try:
            with self.guard.stream(device):
                async with limit:
                    message = await self._report(device, request_iterator, limit)
        except LateReport as e:
            log.info("ignored a late report from device %s: %s", self.coordinator.who(device), e)
            if self.telemetry is not None:
                self.telemetry.report(device, "late", self._round())
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(e))
        except TooManyStreams as e:
            await self._refuse(context, device, "a report", e, grpc.StatusCode.RESOURCE_EXHAUSTED)
        except TimeoutError:
            why = (
                "report still open when its round stopped waiting for reports"
                if (limit.when() or ends) < ends
                else f"report open longer than server.stream_timeout_s = {timeout:g} s"
            )
            await self._refuse(
                context,
                device,
                "an update",
                ProtocolError(f"stream_timeout: {why}; cut, its upload slot freed"),
                grpc.StatusCode.DEADLINE_EXCEEDED,
            )
        except ProtocolError as e:
            await self._refuse(context, device, "an update", e)
        return pb.ReportResponse(accepted=True, message=message, reconnect_after_s=self.coordinator.reconnect_after())

    async def _report(self, device: str, request_iterator, limit: asyncio.Timeout) -> str:
        first = await anext(aiter(request_iterator), None)
        if first is None or not first.HasField("header"):
            raise ProtocolError("a report must start with its header")
        header = first.header
        self.coordinator.admit(device, header)  # the task is checked before an upload slot is taken
        self._bound_by_round(header.round, limit)
        try:
            async with self._uploads:
                payload = b""
                if header.status == pb.COMPLETED:
                    payload = await self._payload(request_iterator, header.update_bytes)
                status = self.coordinator.accept(device, report_of(header, payload))  # the typed envelope
        finally:  # cut, refused or taken: one stream per task at a time, this one is over
            self.coordinator.upload_ended(header.task_id)
        if self.telemetry is not None:
            self.telemetry.report(device, status, header.round, len(payload))
        return status

    async def SecureAggregation(self, request_iterator, context):
        """Walk one device through a round's secure aggregation: per stage, read its message (a header,
        then chunks), hold until the stage closes, answer with its message of the next stage."""
        device = await self._device(context, "SecureAggregation")
        await self._charge(context, device, "a secure aggregation message")
        parts = aiter(request_iterator)
        limit = self.coordinator.update_limit
        task_id = None
        try:
            while True:
                first = await anext(parts, None)
                if first is None:
                    return
                if not first.HasField("header"):
                    raise ProtocolError("a secure aggregation message must start with its header")
                header = first.header
                task_id = header.task_id
                if header.message_bytes > limit:
                    raise ProtocolError(
                        f"secure aggregation: announced {header.message_bytes:,} bytes, over the limit of {limit:,}"
                    )
                async with asyncio.timeout(self.coordinator.cfg.stream_timeout_s), self._uploads:
                    message = await self._chunks(parts, header.message_bytes, limit)
                reply, data = await self.coordinator.secure_exchange(device, header, message)
                if self.telemetry is not None:
                    self.telemetry.transferred("up", len(message))
                    self.telemetry.transferred("down", len(data or b""))
                if header.stage == pb.UNMASKING:
                    reply.reconnect_after_s = self.coordinator.reconnect_after()
                yield pb.SecAggPart(header=reply)
                for piece in chunks(data) if data else ():
                    yield pb.SecAggPart(chunk=pb.Chunk(data=piece))
                if header.stage == pb.UNMASKING:
                    return
        except asyncio.CancelledError:  # the device hung up mid-protocol: do not wait for it at later stages
            if task_id is not None:
                self.coordinator.secure_leave(task_id, device)
            raise
        except (LateReport, DroppedFromRound, SecureRoundAborted) as e:
            log.info("secure aggregation: device %s is out of the round: %s", self.coordinator.who(device), e)
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(e))
        except TimeoutError:
            await self._refuse(
                context,
                device,
                "a secure aggregation message",
                ProtocolError("stream_timeout: message upload open longer than server.stream_timeout_s; cut"),
                grpc.StatusCode.DEADLINE_EXCEEDED,
            )
        except ProtocolError as e:
            await self._refuse(context, device, "a secure aggregation message", e)

    def _round(self) -> int:
        rs = self.coordinator.current
        return rs.round if rs is not None else 0

    async def _chunks(self, parts, expected: int, limit: int) -> bytes:
        """Read ``expected`` bytes of chunks from ``parts`` (exactly: the next header is not consumed)."""
        buf, size = [], 0
        while size < expected:
            part = await anext(parts, None)
            if part is None or not part.HasField("chunk"):
                raise ProtocolError(f"secure aggregation: the message ended after {size:,} of {expected:,} bytes")
            buf.append(part.chunk.data)
            size += len(part.chunk.data)
        return join_chunks(buf, expected, limit, what="secure aggregation message")

    def _bound_by_round(self, round_idx: int, limit: asyncio.Timeout) -> None:
        """Cut the stream when its round stops waiting for reports, if that comes before stream_timeout_s:
        a stalled upload held its slot past the round (16 stalled devices blocked a round's uploads)."""
        rs = self.coordinator.current
        closes = rs.upload_deadline(self.coordinator.cfg.reporting_timeout_s) if rs is not None else None
        if closes is None or rs is None or rs.round != round_idx:
            return
        at = asyncio.get_running_loop().time() + (closes - self.coordinator.clock.now()) + 1.0
        if at < (limit.when() or math.inf):
            limit.reschedule(at)

    async def _payload(self, request_iterator, expected: int) -> bytes:
        limit = self.coordinator.update_limit

        async def parts():
            async for part in request_iterator:
                if not part.HasField("chunk"):
                    raise ProtocolError("a report carries one header, then chunks")
                yield part.chunk.data

        if expected > limit:
            raise ProtocolError(f"update: announced {expected:,} bytes, over the limit of {limit:,}")
        buf, size = [], 0
        async for piece in parts():
            buf.append(piece)
            size += len(piece)
            if size > limit:
                raise ProtocolError(f"update: stream exceeds the limit of {limit:,} bytes")
        return join_chunks(buf, expected, limit)


def _outcome(response: pb.CheckInResponse) -> str:
    """Name a check-in's answer for the telemetry (``hamrah.observe.telemetry.SELECT_OUTCOMES``)."""
    if response.HasField("task"):
        return "evaluate" if response.task.kind == pb.EVALUATE else "selected"
    if response.finished:
        return "finished"
    return "not_eligible" if response.message == "device is not eligible" else "turned_away"
