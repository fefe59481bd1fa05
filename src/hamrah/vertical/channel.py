"""How vertical-FL parties talk: a ``Channel`` per party, and an in-process network of them.

A protocol is written once, as one function per role (``guest(channel, ...)``, ``host(channel,
...)``, ``arbiter(channel, ...)``) that talks to the others only through :meth:`Channel.send` and
:meth:`Channel.recv`. The same role functions run in one process, each in a thread over a
:class:`LocalNetwork` (tests, benchmarks), or in separate processes over gRPC with TLS
(``hamrah.parties``), as httpx's auth flows run under both its sync and async clients.

Messages between two parties arrive in the order sent; ``recv(peer, tag)`` takes the next message
from ``peer`` and refuses it with a :class:`ProtocolError` when its tag is not the one expected. Every
message is encoded with :mod:`hamrah.vertical.message` even in-process, so validation and the byte
counts in :class:`ChannelStats` are the real ones.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from hamrah.core.errors import HamrahError, PartyFailed, ProtocolError
from hamrah.vertical.message import decode, encode

T = TypeVar("T")
DEFAULT_TIMEOUT_S = 300.0
DEFAULT_MAX_MESSAGE = 1 << 30


@dataclass
class ChannelStats:
    """Bytes and messages one party sent and received, per peer."""

    sent_bytes: dict[str, int] = field(default_factory=dict)
    received_bytes: dict[str, int] = field(default_factory=dict)
    sent_messages: dict[str, int] = field(default_factory=dict)

    def count(self, peer: str, size: int, sent: bool) -> None:
        book = self.sent_bytes if sent else self.received_bytes
        book[peer] = book.get(peer, 0) + size
        if sent:
            self.sent_messages[peer] = self.sent_messages.get(peer, 0) + 1

    @property
    def total_bytes(self) -> int:
        return sum(self.sent_bytes.values()) + sum(self.received_bytes.values())


class Channel(Protocol):
    """One party's view of the others."""

    name: str
    peers: tuple[str, ...]
    stats: ChannelStats

    def send(self, to: str, tag: str, message: Mapping[str, object]) -> None:
        """Send ``message`` to party ``to``."""

    def recv(self, frm: str, tag: str) -> dict:
        """Return the next message from ``frm``; raise ProtocolError if its tag is not ``tag``."""


def check_tag(frm: str, expected: str, got: str) -> None:
    """Refuse a message whose tag is not the one the protocol expects next."""
    if got != expected:
        raise ProtocolError(f"from {frm!r}: expected a {expected!r} message, got {got!r}")


class LocalNetwork:
    """Parties in one process, one FIFO queue per ordered pair of parties.

    Args:
        names: the parties' names.
        timeout_s: how long ``recv`` waits before declaring the sender silent.
        max_message_bytes: larger messages are refused by the receiver.
    """

    def __init__(
        self,
        names: tuple[str, ...] | list[str],
        timeout_s: float = DEFAULT_TIMEOUT_S,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE,
    ):
        if len(set(names)) != len(names) or len(names) < 2:
            raise ProtocolError(f"parties: expected at least two distinct names, got {list(names)}")
        self.names = tuple(names)
        self.timeout_s, self.max_message_bytes = timeout_s, max_message_bytes
        self._queues = {(a, b): queue.Queue() for a in names for b in names if a != b}
        self._failed: dict[str, str] = {}
        self._lock = threading.Lock()

    def channel(self, name: str) -> LocalChannel:
        if name not in self.names:
            raise ProtocolError(f"party {name!r} is not in this network (expected one of {list(self.names)})")
        return LocalChannel(self, name)

    def fail(self, party: str, reason: str) -> None:
        """Mark ``party`` as gone, so that whoever waits on it stops with :class:`PartyFailed`."""
        with self._lock:
            self._failed.setdefault(party, reason)
        for (a, _b), q in self._queues.items():
            if a == party:
                q.put(None)

    def failure(self, party: str) -> str | None:
        with self._lock:
            return self._failed.get(party)


class LocalChannel:
    """A party's channel on a :class:`LocalNetwork`."""

    def __init__(self, network: LocalNetwork, name: str):
        self.network, self.name = network, name
        self.peers = tuple(n for n in network.names if n != name)
        self.stats = ChannelStats()

    def _peer(self, other: str) -> None:
        if other not in self.peers:
            raise ProtocolError(f"party {other!r} is not a peer of {self.name!r} (peers: {list(self.peers)})")

    def send(self, to: str, tag: str, message: Mapping[str, object]) -> None:
        self._peer(to)
        data = encode(tag, message)
        self.stats.count(to, len(data), sent=True)
        self.network._queues[(self.name, to)].put(data)

    def recv(self, frm: str, tag: str) -> dict:
        self._peer(frm)
        try:
            data = self.network._queues[(frm, self.name)].get(timeout=self.network.timeout_s)
        except queue.Empty:
            raise PartyFailed(
                frm, f"sent nothing for {self.network.timeout_s:g} s while {self.name!r} waited for its {tag!r} message"
            ) from None
        if data is None:
            raise PartyFailed(frm, f"stopped ({self.network.failure(frm)}) while {self.name!r} waited for {tag!r}")
        if len(data) > self.network.max_message_bytes:
            raise ProtocolError(
                f"from {frm!r}: a {len(data)}-byte message exceeds the {self.network.max_message_bytes}-byte limit"
            )
        self.stats.count(frm, len(data), sent=False)
        envelope = decode(data)
        check_tag(frm, tag, envelope.tag)
        return envelope.fields


def run_parties(
    roles: Mapping[str, Callable[[LocalChannel], T]], timeout_s: float = DEFAULT_TIMEOUT_S
) -> tuple[dict[str, T], dict[str, ChannelStats]]:
    """Run one protocol's roles in threads over a :class:`LocalNetwork`.

    Args:
        roles: party name -> the role function, called with that party's channel.
        timeout_s: how long any ``recv`` waits.

    Returns:
        Each party's return value and each party's channel statistics.

    Raises:
        HamrahError: the first party's error (others waiting on it stop with PartyFailed), with
            the failing party named.
    """
    network = LocalNetwork(list(roles), timeout_s=timeout_s)
    channels = {name: network.channel(name) for name in roles}
    results: dict[str, T] = {}
    errors: dict[str, BaseException] = {}

    def run(name: str) -> None:
        try:
            results[name] = roles[name](channels[name])
        except BaseException as e:
            errors[name] = e
            network.fail(name, f"{type(e).__name__}: {e}")

    threads = [threading.Thread(target=run, args=(n,), name=f"party-{n}", daemon=True) for n in roles]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        # The root cause is the error that is not a reaction to another party's failure.
        first = next((e for e in errors.values() if not isinstance(e, PartyFailed)), next(iter(errors.values())))
        name = next(n for n, e in errors.items() if e is first)
        if isinstance(first, HamrahError):
            raise first
        raise PartyFailed(name, f"{type(first).__name__}: {first}") from first
    return results, {n: c.stats for n, c in channels.items()}
