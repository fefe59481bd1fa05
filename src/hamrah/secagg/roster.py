"""Who takes part in one actively secure SecAgg session, and the session id every signature is bound to.

Over a network the actively secure variant (:mod:`hamrah.secagg.active`) needs two things the state
machines take as parameters: the map ``client id -> identity public key`` (the PKI) and a session id
that no other run of the protocol shares. Both come from a JOIN exchange before round 0:

- each client sends a :class:`JoinIdentity`: a fresh 32-byte nonce and its identity certificate (the
  operator's CA-signed binding of its name to its Ed25519 key; :mod:`hamrah.transport.identity`);
- the server answers every client with the same :class:`Roster`: ``(id, nonce, certificate)`` of every
  client that joined.

A client checks the roster (its own entry carries its own nonce and certificate; every certificate is
the CA's; no device or key appears twice) and derives the session id itself, as the SHA-256 of the
roster (:func:`session_id`). Its signatures (key advertisement, contributor set) cover that id. Since
the roster holds the client's fresh nonce, a signature it makes in this session never verifies in
another one, even one with the same round number: a lying server cannot carry signatures across
sessions (e.g. a retried round) to build a second quorum; and clients given different rosters have
different session ids, so their signatures do not count for each other.

No I/O; the codec follows :mod:`hamrah.secagg.messages` (big-endian fixed-width fields, ``ProtocolError``
for anything that is not exactly one well-formed message).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from hamrah.core.errors import ProtocolError
from hamrah.secagg.messages import _Reader, _unique

NONCE_BYTES = 32
MAX_CERT_BYTES = 8192
_MAGIC = b"HR\x01"


@dataclass(frozen=True)
class JoinIdentity:
    """JOIN, client -> server: a fresh nonce and the client's identity certificate (DER)."""

    nonce: bytes
    certificate: bytes

    def to_bytes(self) -> bytes:
        """Return the wire form: magic, kind 1, the nonce, the certificate's length and bytes."""
        _check(self.nonce, self.certificate)
        return _MAGIC + b"\x01" + self.nonce + len(self.certificate).to_bytes(4, "big") + self.certificate

    @staticmethod
    def from_bytes(data: bytes) -> JoinIdentity:
        """Parse :meth:`to_bytes`' form.

        Raises:
            ProtocolError: not exactly one well-formed JoinIdentity.
        """
        r = _open(data, 1)
        out = JoinIdentity(r.take(NONCE_BYTES, "nonce"), _cert(r))
        r.done()
        return out


@dataclass(frozen=True)
class RosterEntry:
    """One client of the session: its protocol id, its JOIN nonce and its identity certificate (DER)."""

    client_id: int
    nonce: bytes
    certificate: bytes


@dataclass(frozen=True)
class Roster:
    """JOIN -> round 0, server -> every client: the clients that joined, sorted by id."""

    round_id: int
    entries: tuple[RosterEntry, ...]

    def to_bytes(self) -> bytes:
        """Return the wire form (also what :func:`session_id` hashes)."""
        out = [_MAGIC, b"\x02", self.round_id.to_bytes(8, "big"), len(self.entries).to_bytes(4, "big")]
        for e in self.entries:
            _check(e.nonce, e.certificate)
            out += [e.client_id.to_bytes(4, "big"), e.nonce, len(e.certificate).to_bytes(4, "big"), e.certificate]
        return b"".join(out)

    @staticmethod
    def from_bytes(data: bytes) -> Roster:
        """Parse :meth:`to_bytes`' form.

        Raises:
            ProtocolError: not exactly one well-formed Roster, ids not strictly increasing.
        """
        r = _open(data, 2)
        round_id = int.from_bytes(r.take(8, "round id"), "big")
        count = r.u32("entry count")
        if count > len(data) // (8 + NONCE_BYTES):
            raise ProtocolError(f"roster: {count} entries cannot fit in {len(data)} bytes")
        entries = tuple(RosterEntry(r.u32("client id"), r.take(NONCE_BYTES, "nonce"), _cert(r)) for _ in range(count))
        r.done()
        ids = [e.client_id for e in entries]
        _unique(ids, "Roster")
        if ids != sorted(ids):
            raise ProtocolError("roster: client ids must be sorted")
        return Roster(round_id, entries)


def session_id(roster: Roster) -> bytes:
    """Return the 32-byte session id of a roster: SHA-256 over a label and the roster's wire form."""
    return hashlib.sha256(b"hamrah-secagg-session/1\0" + roster.to_bytes()).digest()


def _check(nonce: bytes, certificate: bytes) -> None:
    if len(nonce) != NONCE_BYTES:
        raise ProtocolError(f"a JOIN nonce must be {NONCE_BYTES} bytes, got {len(nonce)}")
    if not 0 < len(certificate) <= MAX_CERT_BYTES:
        raise ProtocolError(f"an identity certificate must be 1..{MAX_CERT_BYTES} bytes, got {len(certificate)}")


def _cert(r: _Reader) -> bytes:
    size = r.u32("certificate length")
    if not 0 < size <= MAX_CERT_BYTES:
        raise ProtocolError(f"an identity certificate must be 1..{MAX_CERT_BYTES} bytes, got {size}")
    return r.take(size, "certificate")


def _open(data: bytes, kind: int) -> _Reader:
    if not isinstance(data, (bytes, bytearray)) or bytes(data[:3]) != _MAGIC or len(data) < 4 or data[3] != kind:
        raise ProtocolError(
            f"not a secure-aggregation {'JoinIdentity' if kind == 1 else 'Roster'} message "
            f"(expected magic {_MAGIC!r} and kind {kind})"
        )
    return _Reader(bytes(data), 4)


__all__ = ["NONCE_BYTES", "JoinIdentity", "Roster", "RosterEntry", "session_id"]
