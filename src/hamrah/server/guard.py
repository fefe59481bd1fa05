"""What one device may cost the server: calls per second, open streams, stream lifetimes, and the
messages it cannot parse. The gRPC service asks a :class:`Guard` before doing any work for a call.

- **Rate**: a token bucket per device key (refill ``rate_per_s``, size ``rate_burst``); a call over
  it is refused with RESOURCE_EXHAUSTED before it reaches a Selector or the Coordinator.
- **Streams**: at most ``max_streams_per_device`` Report / DownloadCheckpoint / SecureAggregation
  streams open at once per device; each stream lives at most ``stream_timeout_s`` (the service cuts
  a stalled one and frees its upload slot).
- **Malformed protobuf**: requests are parsed by :func:`add_service`'s deserializers, which turn a
  parse failure into :data:`MALFORMED` instead of an exception (gRPC would log a traceback per
  message, before authentication); the service refuses it with INVALID_ARGUMENT.

Refusals are counted by reason (``Guard.refusals``), so the summary says what was refused and why.
"""

from __future__ import annotations

import collections
import contextlib
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import grpc
from google.protobuf.message import DecodeError

from hamrah.core.errors import ProtocolError
from hamrah.transport.proto import fl_pb2 as pb

MAX_REASONS = 64  # distinct refusal reasons counted by name (the summary, /metrics labels)
OTHER_REASONS = "other reasons"
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
_NUMBER = re.compile(r"[-+]?\d[\w.+-]*")


class Malformed:
    """Stands for a request message that did not parse; has no fields."""

    def HasField(self, name: str) -> bool:
        return False


MALFORMED = Malformed()


class RateLimited(ProtocolError):
    """A device called more often than its rate limit allows."""


class TooManyStreams(ProtocolError):
    """A device opened more streams at once than allowed."""


@dataclass
class TokenBucket:
    """A token bucket: ``rate`` tokens per second, at most ``burst``; one call takes one token."""

    rate: float
    burst: int
    tokens: float = -1.0
    stamp: float = 0.0

    def take(self, now: float) -> bool:
        """Return True and spend a token if one is left at time ``now`` (monotonic seconds)."""
        if self.tokens < 0:
            self.tokens, self.stamp = float(self.burst), now
        self.tokens = min(float(self.burst), self.tokens + max(now - self.stamp, 0.0) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


@dataclass
class Guard:
    """Per-device limits on calls and streams; see the module docstring.

    Attributes:
        rate_per_s, rate_burst: the token bucket of every device.
        max_streams: streams one device may hold open at once.
        max_devices: buckets kept (the oldest are dropped beyond it, so bogus keys cannot grow memory).
    """

    rate_per_s: float
    rate_burst: int
    max_streams: int
    max_devices: int = 100_000
    buckets: collections.OrderedDict = field(default_factory=collections.OrderedDict)
    streams: collections.Counter = field(default_factory=collections.Counter)
    refusals: collections.Counter = field(default_factory=collections.Counter)
    warned: set = field(default_factory=set)

    def call(self, device: str, now: float) -> None:
        """Charge one call of ``device`` at time ``now``.

        Raises:
            RateLimited: the device's bucket is empty.
        """
        bucket = self.buckets.pop(device, None) or TokenBucket(self.rate_per_s, self.rate_burst)
        self.buckets[device] = bucket
        while len(self.buckets) > self.max_devices:
            self.buckets.popitem(last=False)
        if not bucket.take(now):
            raise RateLimited(
                f"device over its rate limit of {self.rate_per_s:g} calls/s (burst "
                f"{self.rate_burst}); expected fewer calls (follow reconnect_after_s)"
            )

    @contextlib.contextmanager
    def stream(self, device: str) -> Iterator[None]:
        """Hold one of ``device``'s stream places for the ``with`` block.

        Raises:
            TooManyStreams: the device already holds ``max_streams`` streams.
        """
        if self.streams[device] >= self.max_streams:
            raise TooManyStreams(
                f"device already holds {self.streams[device]} open streams; expected at most {self.max_streams} at once"
            )
        self.streams[device] += 1
        try:
            yield
        finally:
            self.streams[device] -= 1
            if self.streams[device] <= 0:
                del self.streams[device]

    def count(self, reason: str) -> str:
        """Count a refusal under ``reason``; return the label counted. Past :data:`MAX_REASONS` distinct
        reasons a new one counts as :data:`OTHER_REASONS` (a device's messages cannot grow the table)."""
        if reason not in self.refusals and len(self.refusals) >= MAX_REASONS:
            reason = OTHER_REASONS
        self.refusals[reason] += 1
        return reason

    def first(self, device: str, what: str) -> bool:
        """Return True the first time ``device`` is refused for ``what`` (to log it once, not per call)."""
        key = (device, what)
        if key in self.warned:
            return False
        if len(self.warned) >= self.max_devices:
            self.warned.clear()
        self.warned.add(key)
        return True


def reason_of(err: Exception) -> str:
    """Return a short refusal reason for the summary's counters: the error's own ``reason`` label if it
    has one, else the first words of its message with quoted text and numbers blanked (a device's
    values, which would make every refusal a reason of its own)."""
    text = getattr(err, "reason", None)
    if not isinstance(text, str):
        text = _NUMBER.sub("N", _QUOTED.sub("'...'", str(err)))
    head = text.split(":", 1)[0] if ":" in text[:40] else " ".join(text.split()[:3])
    return f"{type(err).__name__}: {head}"[:80]


def _safe(parse: Callable[[bytes], object]) -> Callable[[bytes], object]:
    def deserialize(data: bytes):
        try:
            return parse(data)
        except (DecodeError, ValueError, RuntimeError):
            return MALFORMED

    return deserialize


def add_service(servicer, server) -> None:
    """Register ``servicer`` (a ``FederatedLearningServicer``) on ``server`` with deserializers that
    hand :data:`MALFORMED` to the handler instead of raising on a corrupt message."""
    handlers = {
        "CheckIn": grpc.unary_unary_rpc_method_handler(
            servicer.CheckIn,
            request_deserializer=_safe(pb.CheckInRequest.FromString),
            response_serializer=pb.CheckInResponse.SerializeToString,
        ),
        "DownloadCheckpoint": grpc.unary_stream_rpc_method_handler(
            servicer.DownloadCheckpoint,
            request_deserializer=_safe(pb.CheckpointRequest.FromString),
            response_serializer=pb.Chunk.SerializeToString,
        ),
        "Report": grpc.stream_unary_rpc_method_handler(
            servicer.Report,
            request_deserializer=_safe(pb.ReportPart.FromString),
            response_serializer=pb.ReportResponse.SerializeToString,
        ),
        "SecureAggregation": grpc.stream_stream_rpc_method_handler(
            servicer.SecureAggregation,
            request_deserializer=_safe(pb.SecAggPart.FromString),
            response_serializer=pb.SecAggPart.SerializeToString,
        ),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("hamrah.v1.FederatedLearning", handlers),))


__all__ = [
    "MALFORMED",
    "Guard",
    "Malformed",
    "RateLimited",
    "TokenBucket",
    "TooManyStreams",
    "add_service",
    "reason_of",
]
