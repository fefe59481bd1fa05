"""A vertical-FL ``Channel`` between real parties: gRPC over mutual TLS, one server per party.

Every party listens on its own address and delivers a message to a peer with one unary call
``/hamrah.vertical.Party/Deliver`` carrying raw bytes (no protobuf: the payload is already
:mod:`hamrah.vertical.message`'s validated format). Who sent it is the common name of the caller's TLS
client certificate, signed by the parties' CA (``transport.certs``), never a claim in the
message. A frame is a 16-byte session id (one per protocol attempt), an 8-byte sequence number and
the message: duplicates from retries are dropped, gaps refused, and a peer that restarts (a new
session) is noticed by whoever waits on it.

A peer that goes away is reported as :class:`PartyFailed`: its address refuses connections while we
wait for it (checked every ``ping_s``), it sends nothing for ``timeout_s``, or it restarted. A party
that stops on an error of its own tells its peers (:meth:`GrpcChannel.abort`: the kind of error only),
and they stop with :class:`PartyStopped` instead of waiting for it.

Each side checks the other's name: a server reads the caller's from its client certificate, and a
caller accepts only a server certificate that names the peer it meant (the party name is a subject
alternative name of its server certificate, checked through ``grpc.ssl_target_name_override``), so
a party holding another server certificate of the same CA cannot take a peer's traffic.
"""

from __future__ import annotations

import secrets
import struct
import threading
import time
from collections import deque
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import grpc
from cryptography import x509
from cryptography.x509.oid import NameOID

from hamrah.core.errors import PartyFailed, PartyStopped, ProtocolError, TransportError
from hamrah.transport.endpoints import tls_failure
from hamrah.transport.security import channel_credentials, server_credentials
from hamrah.vertical.channel import ChannelStats, check_tag
from hamrah.vertical.message import decode, encode

SERVICE = "hamrah.vertical.Party"
MAX_MESSAGE = 1 << 30
FRAME = struct.Struct(">16sQ")
ABORT = "party/abort"  # the last message of a party that stopped on an error of its own
RECONNECT_MS = 2000  # the longest pause between connection attempts (gRPC's default grows to 120 s)


@dataclass(frozen=True)
class TLSFiles:
    """A party's TLS material: the parties' CA, its server certificate and key, its client certificate and key."""

    ca: str
    cert: str
    key: str
    client_cert: str
    client_key: str


def _sender(context) -> str | None:
    pems = context.auth_context().get("x509_pem_cert") or []
    if not pems:
        return None
    names = x509.load_pem_x509_certificate(pems[0]).subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else None


class Inbox:
    """Messages received per peer, across the protocol attempts of one party process."""

    def __init__(self, peers: tuple[str, ...]):
        self.peers = peers
        self.cv = threading.Condition()
        self.items = {p: deque() for p in peers}
        self.latest: dict[str, bytes | None] = {p: None for p in peers}
        self.next_seq = {p: 0 for p in peers}

    def put(self, sender: str, session: bytes, seq: int, data: bytes) -> str | None:
        """Store one frame; return an error text for the sender, or None."""
        with self.cv:
            if seq == 0 and session != self.latest[sender]:
                self.latest[sender], self.next_seq[sender] = session, 0
                self.items[sender].clear()
                self.cv.notify_all()
            if session != self.latest[sender] or seq < self.next_seq[sender]:
                return None  # a stale session or a retried duplicate: already handled
            if seq > self.next_seq[sender]:
                return f"message {seq} arrived before message {self.next_seq[sender]}"
            self.items[sender].append((session, data))
            self.next_seq[sender] += 1
            self.cv.notify_all()
            return None


class PartyServer:
    """One party's gRPC server and its inbox; lives as long as the party's process.

    Args:
        name: this party. peers: name -> address of every other party. listen: ``host:port`` to bind.
        tls: certificates. timeout_s: silence before a peer is declared gone. ping_s: liveness checks.
    """

    def __init__(
        self,
        name: str,
        peers: Mapping[str, str],
        listen: str,
        tls: TLSFiles,
        timeout_s: float = 300.0,
        ping_s: float = 1.0,
    ):
        from hamrah.parties.tls import check_party_tls  # tls imports TLSFiles from here

        check_party_tls(tls)
        self.name, self.addresses, self.tls = name, dict(peers), tls
        self.timeout_s, self.ping_s = timeout_s, ping_s
        self.inbox = Inbox(tuple(sorted(peers)))
        self.dead: set[bytes] = set()
        opts = [("grpc.max_receive_message_length", MAX_MESSAGE), ("grpc.max_send_message_length", MAX_MESSAGE)]
        # no SO_REUSEPORT: a second party on the same address must fail, not share (and split) its traffic
        self.server = grpc.server(ThreadPoolExecutor(max_workers=4), options=[*opts, ("grpc.so_reuseport", 0)])
        handlers = {
            "Deliver": grpc.unary_unary_rpc_method_handler(self._deliver),
            "Ping": grpc.unary_unary_rpc_method_handler(lambda req, ctx: b""),
        }
        self.server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
        try:
            bound = self.server.add_secure_port(listen, server_credentials(tls.cert, tls.key, client_ca=tls.ca))
        except RuntimeError:
            bound = 0
        if not bound:
            raise TransportError(f"party {name!r}: cannot listen on {listen} (is another process using it?)")
        creds = channel_credentials(tls.ca, tls.client_cert, tls.client_key)
        self.stubs = {}
        for peer, address in self.addresses.items():
            pinned = [("grpc.ssl_target_name_override", peer), ("grpc.max_reconnect_backoff_ms", RECONNECT_MS)]
            ch = grpc.secure_channel(address, creds, options=[*opts, *pinned])
            self.stubs[peer] = (ch.unary_unary(f"/{SERVICE}/Deliver"), ch.unary_unary(f"/{SERVICE}/Ping"), ch)
        self.server.start()

    def _deliver(self, request: bytes, context) -> bytes:
        sender = _sender(context)
        if sender not in self.inbox.peers:
            context.abort(grpc.StatusCode.PERMISSION_DENIED, f"certificate {sender!r} is not a peer of {self.name!r}")
        if len(request) < FRAME.size:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "frame shorter than its header")
        session, seq = FRAME.unpack_from(request)
        error = self.inbox.put(sender, session, seq, request[FRAME.size :])
        if error:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, error)
        return b""

    def channel(self) -> GrpcChannel:
        """Return a channel for one protocol attempt (a fresh session)."""
        return GrpcChannel(self)

    def stop(self) -> None:
        self.server.stop(grace=1.0)
        for _, _, ch in self.stubs.values():
            ch.close()


class GrpcChannel:
    """One protocol attempt's :class:`~hamrah.vertical.channel.Channel` over a :class:`PartyServer`."""

    def __init__(self, server: PartyServer):
        self.server, self.name = server, server.name
        self.peers = tuple(sorted(server.addresses))
        self.stats = ChannelStats()
        self.session, self.seq = secrets.token_bytes(16), {p: 0 for p in self.peers}
        self.bound: dict[str, bytes] = {}
        self.alive: set[str] = set()

    def _peer(self, other: str) -> None:
        if other not in self.peers:
            raise ProtocolError(f"party {other!r} is not a peer of {self.name!r} (peers: {list(self.peers)})")

    def send(self, to: str, tag: str, message: Mapping[str, object]) -> None:
        self._peer(to)
        data = encode(tag, message)
        self._deliver(to, tag, FRAME.pack(self.session, self.seq[to]) + data, self.server.timeout_s)
        self.seq[to] += 1
        self.alive.add(to)
        self.stats.count(to, len(data), sent=True)

    def _deliver(self, to: str, tag: str, frame: bytes, within_s: float) -> None:
        """Deliver one frame, retrying while ``to`` is not reachable yet (it may not have started), for
        up to ``within_s`` seconds; a TLS failure is reported at once (waiting does not mend it)."""
        deliver, address = self.server.stubs[to][0], self.server.addresses[to]
        deadline = time.monotonic() + within_s
        while True:
            try:
                deliver(frame, timeout=max(deadline - time.monotonic(), 0.01))
                return
            except grpc.RpcError as e:
                code, details = e.code(), e.details() or ""
            self._stopped(to)  # a peer that told us it stopped (its server closing may fail our handshake)
            if code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.PERMISSION_DENIED):
                raise ProtocolError(f"{to!r} refused our {tag!r} message: {details}")
            if code == grpc.StatusCode.UNAVAILABLE and tls_failure(details):
                raise TransportError(
                    f"party {self.name!r}: the TLS handshake with {to!r} at {address} failed; expected a server "
                    f"certificate naming {to!r}, signed by the CA in this party's [tls] ca (gRPC: {details})"
                )
            if code != grpc.StatusCode.UNAVAILABLE or time.monotonic() + self.server.ping_s > deadline:
                why = "nothing listening there" if "refused" in details.lower() else f"{code.name}: {details}"
                raise PartyFailed(to, f"unreachable at {address} ({why}) while {self.name!r} sent {tag!r}")
            time.sleep(self.server.ping_s)

    def abort(self, error: str) -> None:
        """Tell every peer this party stopped on an error of kind ``error`` (best effort, a few seconds)."""
        for peer in self.peers:
            try:
                self._deliver(
                    peer, ABORT, FRAME.pack(self.session, self.seq[peer]) + encode(ABORT, {"error": error}), 3
                )
            except (PartyFailed, PartyStopped, ProtocolError, TransportError):
                continue  # that peer is gone, stopped too, or refuses us: nothing more to tell it

    def _stopped(self, frm: str) -> None:
        """Raise :class:`PartyStopped` if the last message ``frm`` sent this attempt is its abort."""
        with self.server.inbox.cv:
            queue = self.server.inbox.items[frm]
            session, data = queue[-1] if queue else (None, b"")
        if session is None or session in self.server.dead:
            return
        try:
            envelope = decode(data)
        except ProtocolError:
            return  # recv names it
        if envelope.tag == ABORT:
            _raise_stopped(frm, envelope)

    def _gone(self, frm: str) -> bool:
        try:
            self.server.stubs[frm][1](b"", timeout=max(self.server.ping_s, 1.0))
            return False
        except grpc.RpcError as e:
            return e.code() == grpc.StatusCode.UNAVAILABLE

    def _next(self, frm: str, tag: str) -> bytes:
        inbox, deadline = self.server.inbox, time.monotonic() + self.server.timeout_s
        with inbox.cv:
            while True:
                latest = inbox.latest[frm]
                if frm in self.bound and latest != self.bound[frm]:
                    raise PartyFailed(frm, f"restarted while {self.name!r} waited for {tag!r}")
                queue = inbox.items[frm]
                while queue and queue[0][0] in self.server.dead:
                    queue.popleft()
                if queue:
                    session, data = queue.popleft()
                    self.bound.setdefault(frm, session)
                    self.alive.add(frm)
                    return data
                if time.monotonic() > deadline:
                    raise PartyFailed(
                        frm,
                        f"sent nothing for {self.server.timeout_s:g} s while {self.name!r} "
                        f"waited for its {tag!r} message",
                    )
                inbox.cv.wait(self.server.ping_s)
                if frm in self.alive and not inbox.items[frm]:
                    inbox.cv.release()
                    try:
                        gone = self._gone(frm)
                    finally:
                        inbox.cv.acquire()
                    if gone:
                        raise PartyFailed(
                            frm,
                            f"went away (unreachable at {self.server.addresses[frm]}) while "
                            f"{self.name!r} waited for {tag!r}",
                        )

    def recv(self, frm: str, tag: str) -> dict:
        self._peer(frm)
        data = self._next(frm, tag)
        self.stats.count(frm, len(data), sent=False)
        try:
            envelope = decode(data)
        except ProtocolError as e:
            raise ProtocolError(f"from {frm!r}: {e}") from None
        if envelope.tag == ABORT:
            _raise_stopped(frm, envelope)
        check_tag(frm, tag, envelope.tag)
        return envelope.fields

    def close(self) -> None:
        """End this attempt: messages of the sessions it heard from are stale from now on."""
        self.server.dead.update(self.bound.values())


def _raise_stopped(frm: str, envelope) -> None:
    error = envelope.fields.get("error")
    raise PartyStopped(frm, error if isinstance(error, str) and error.isidentifier() else "an error")


__all__ = ["GrpcChannel", "Inbox", "PartyServer", "TLSFiles"]
