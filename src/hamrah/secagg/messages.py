"""The messages of secure aggregation and their compact, versioned binary codec.

Every message is a frozen dataclass; ``to_bytes()`` gives its wire form and ``nbytes`` its exact
size. The wire form is a 16-byte header (magic ``HS``, version, kind, round id u64, client id u32:
the sender for client messages, the recipient for server messages) and a body of big-endian fixed
width fields. ``from_bytes`` (and :func:`decode`) raise ``ProtocolError`` for anything that is not
exactly one well-formed message of the expected kind: short or long input, unknown magic, version or
kind, duplicate ids, out-of-range values.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import ClassVar

from hamrah.core.errors import ProtocolError
from hamrah.secagg.crypto import KEY_BYTES, TAG_BYTES
from hamrah.secagg.ring import packed_size
from hamrah.secagg.shamir import PRIME, SHARE_BYTES

MAGIC, VERSION = b"HS", 2
"""Version 2: MaskedInput carries the client's rejected senders (version 1 had no such list)."""
_HEADER = struct.Struct(">2sBBQI")
CIPHERTEXT_BYTES = 2 * SHARE_BYTES + TAG_BYTES
"""A sealed pair of shares (of s_u^SK and b_u): two field elements and the GCM tag."""


class _Reader:
    def __init__(self, data: bytes, offset: int):
        self.data, self.pos = data, offset

    def take(self, n: int, what: str) -> bytes:
        if self.pos + n > len(self.data):
            raise ProtocolError(
                f"message truncated: {what} needs {n} bytes at offset {self.pos}, only {len(self.data) - self.pos} left"
            )
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def u32(self, what: str) -> int:
        return int.from_bytes(self.take(4, what), "big")

    def share(self, what: str) -> int:
        value = int.from_bytes(self.take(SHARE_BYTES, what), "big")
        if value >= PRIME:
            raise ProtocolError(f"{what} is not a field element (>= the Shamir prime)")
        return value

    def done(self) -> None:
        if self.pos != len(self.data):
            raise ProtocolError(f"{len(self.data) - self.pos} unexpected trailing bytes after the message")


def _unique(ids, what: str) -> None:
    if len(set(ids)) != len(ids):
        raise ProtocolError(f"{what} lists a client id twice")


def _ids_bytes(pairs) -> bytes:
    return len(pairs).to_bytes(4, "big")


class _Codec:
    KIND: ClassVar[int]
    round_id: int
    client_id: int

    def to_bytes(self) -> bytes:
        """Return the wire form of this message."""
        return _HEADER.pack(MAGIC, VERSION, self.KIND, self.round_id, self.client_id) + self._body()

    @property
    def nbytes(self) -> int:
        """Exact size of the wire form in bytes."""
        return _HEADER.size + self._body_size()

    @classmethod
    def from_bytes(cls, data: bytes):
        """Decode one message of this kind; raise ProtocolError if ``data`` is anything else."""
        message = decode(data)
        if not isinstance(message, cls):
            raise ProtocolError(f"expected a {cls.__name__} message, got {type(message).__name__}")
        return message


@dataclass(frozen=True)
class AdvertiseKeys(_Codec):
    """Round 0, client -> server: the client's two X25519 public keys (c_u for encryption, s_u for masks)."""

    KIND: ClassVar[int] = 1
    round_id: int
    client_id: int
    c_public: bytes
    s_public: bytes

    def _body(self) -> bytes:
        return self.c_public + self.s_public

    def _body_size(self) -> int:
        return 2 * KEY_BYTES

    @classmethod
    def _decode(cls, r: _Reader, round_id: int, client_id: int):
        return cls(round_id, client_id, r.take(KEY_BYTES, "c_public"), r.take(KEY_BYTES, "s_public"))


@dataclass(frozen=True)
class PeerKeys:
    """One neighbour's public keys, as the server relays them."""

    client_id: int
    c_public: bytes
    s_public: bytes


@dataclass(frozen=True)
class KeysBroadcast(_Codec):
    """Round 0 -> 1, server -> one client: the public keys of its neighbours that advertised (U1)."""

    KIND: ClassVar[int] = 2
    round_id: int
    client_id: int
    peers: tuple[PeerKeys, ...]

    def _body(self) -> bytes:
        return _ids_bytes(self.peers) + b"".join(
            p.client_id.to_bytes(4, "big") + p.c_public + p.s_public for p in self.peers
        )

    def _body_size(self) -> int:
        return 4 + len(self.peers) * (4 + 2 * KEY_BYTES)

    @classmethod
    def _decode(cls, r: _Reader, round_id: int, client_id: int):
        peers = tuple(
            PeerKeys(r.u32("peer id"), r.take(KEY_BYTES, "c_public"), r.take(KEY_BYTES, "s_public"))
            for _ in range(r.u32("peer count"))
        )
        _unique([p.client_id for p in peers], "KeysBroadcast")
        return cls(round_id, client_id, peers)


def _encode_cts(cts) -> bytes:
    return _ids_bytes(cts) + b"".join(i.to_bytes(4, "big") + ct for i, ct in cts)


def _decode_cts(r: _Reader, what: str) -> tuple[tuple[int, bytes], ...]:
    cts = tuple((r.u32("client id"), r.take(CIPHERTEXT_BYTES, "ciphertext")) for _ in range(r.u32("count")))
    _unique([i for i, _ in cts], what)
    return cts


@dataclass(frozen=True)
class _Ciphertexts(_Codec):
    """A message carrying ``(party, ciphertext)`` pairs, one per neighbour."""

    round_id: int
    client_id: int
    ciphertexts: tuple[tuple[int, bytes], ...]

    def _body(self) -> bytes:
        return _encode_cts(self.ciphertexts)

    def _body_size(self) -> int:
        return 4 + len(self.ciphertexts) * (4 + CIPHERTEXT_BYTES)

    @classmethod
    def _decode(cls, r: _Reader, round_id: int, client_id: int):
        return cls(round_id, client_id, _decode_cts(r, cls.__name__))


@dataclass(frozen=True)
class ShareKeys(_Ciphertexts):
    """Round 1, client -> server: ``(receiver, AE(shares of s_u^SK and b_u for the receiver))`` per neighbour."""

    KIND: ClassVar[int] = 3


@dataclass(frozen=True)
class SharesBroadcast(_Ciphertexts):
    """Round 1 -> 2, server -> one client: the ciphertexts addressed to it, ``(sender, ciphertext)`` (U2)."""

    KIND: ClassVar[int] = 4


@dataclass(frozen=True)
class MaskedInput(_Codec):
    """Round 2, client -> server: y_u = x_u + PRG(b_u) + sum_v +-PRG(s_uv) mod 2^k, bit-packed.

    ``rejected``: the senders whose share ciphertext this client could not open (it failed authentication
    or held no field elements); the client left them out of its pairwise masks, and the server leaves
    them out of the round (:mod:`hamrah.secagg.rejections`). Sorted, no repeats.
    """

    KIND: ClassVar[int] = 5
    round_id: int
    client_id: int
    ring_bits: int
    length: int
    data: bytes
    rejected: tuple[int, ...] = ()

    def _body(self) -> bytes:
        return (
            bytes([self.ring_bits])
            + self.length.to_bytes(4, "big")
            + _ids_bytes(self.rejected)
            + b"".join(i.to_bytes(4, "big") for i in self.rejected)
            + self.data
        )

    def _body_size(self) -> int:
        return 9 + 4 * len(self.rejected) + len(self.data)

    @classmethod
    def _decode(cls, r: _Reader, round_id: int, client_id: int):
        bits, length = r.take(1, "ring_bits")[0], r.u32("length")
        if not 1 <= bits <= 64:
            raise ProtocolError(f"ring_bits must lie in [1, 64], got {bits}")
        rejected = tuple(r.u32("rejected sender id") for _ in range(r.u32("rejected count")))
        _unique(rejected, "MaskedInput's rejected senders")
        data = r.take(packed_size(length, bits), "masked vector")
        return cls(round_id, client_id, bits, length, data, rejected)


@dataclass(frozen=True)
class UnmaskRequest(_Codec):
    """Round 2 -> 3, server -> one client: the clients whose masked input arrived (U3)."""

    KIND: ClassVar[int] = 6
    round_id: int
    client_id: int
    survivors: tuple[int, ...]

    def _body(self) -> bytes:
        return _ids_bytes(self.survivors) + b"".join(i.to_bytes(4, "big") for i in self.survivors)

    def _body_size(self) -> int:
        return 4 + 4 * len(self.survivors)

    @classmethod
    def _decode(cls, r: _Reader, round_id: int, client_id: int):
        survivors = tuple(r.u32("survivor id") for _ in range(r.u32("survivor count")))
        _unique(survivors, "UnmaskRequest")
        return cls(round_id, client_id, survivors)


def _encode_shares(shares) -> bytes:
    return _ids_bytes(shares) + b"".join(i.to_bytes(4, "big") + s.to_bytes(SHARE_BYTES, "big") for i, s in shares)


def _decode_shares(r: _Reader, what: str) -> tuple[tuple[int, int], ...]:
    shares = tuple((r.u32("owner id"), r.share(what)) for _ in range(r.u32("share count")))
    _unique([i for i, _ in shares], what)
    return shares


@dataclass(frozen=True)
class UnmaskShares(_Codec):
    """Round 3, client -> server: its shares of b_v for survivors v, and of s_v^SK for dropped v."""

    KIND: ClassVar[int] = 7
    round_id: int
    client_id: int
    self_mask_shares: tuple[tuple[int, int], ...]
    key_shares: tuple[tuple[int, int], ...]

    def _body(self) -> bytes:
        return _encode_shares(self.self_mask_shares) + _encode_shares(self.key_shares)

    def _body_size(self) -> int:
        return 8 + (len(self.self_mask_shares) + len(self.key_shares)) * (4 + SHARE_BYTES)

    @classmethod
    def _decode(cls, r: _Reader, round_id: int, client_id: int):
        return cls(round_id, client_id, _decode_shares(r, "self-mask share"), _decode_shares(r, "key share"))


_KINDS = {
    c.KIND: c
    for c in (AdvertiseKeys, KeysBroadcast, ShareKeys, SharesBroadcast, MaskedInput, UnmaskRequest, UnmaskShares)
}


def register(cls):
    """Make :func:`decode` know message class ``cls`` (the actively secure variant's messages); returns ``cls``."""
    if _KINDS.get(cls.KIND, cls) is not cls:
        raise ValueError(f"message kind {cls.KIND} is taken by {_KINDS[cls.KIND].__name__}")
    _KINDS[cls.KIND] = cls
    return cls


def decode(data: bytes):
    """Decode any secure-aggregation message.

    Raises:
        ProtocolError: ``data`` is not exactly one well-formed message.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ProtocolError(f"a message must be bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) < _HEADER.size:
        raise ProtocolError(f"message truncated: {len(data)} bytes, the header alone is {_HEADER.size}")
    magic, version, kind, round_id, client_id = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise ProtocolError(f"not a secure-aggregation message: magic {magic!r}, expected {MAGIC!r}")
    if version != VERSION:
        raise ProtocolError(f"unsupported message version {version}, this build speaks version {VERSION}")
    if kind not in _KINDS:
        raise ProtocolError(f"unknown message kind {kind}, expected one of {sorted(_KINDS)}")
    reader = _Reader(data, _HEADER.size)
    message = _KINDS[kind]._decode(reader, round_id, client_id)
    reader.done()
    return message
