"""The messages that the actively secure variant of secure aggregation adds (Bonawitz et al. 2017, Figure 4).

Signed key advertisements (round 0) and the ConsistencyCheck round (between masked input and
unmasking). Same codec as :mod:`hamrah.secagg.messages`: a 16-byte header, big-endian fixed-width fields,
``ProtocolError`` for anything that is not exactly one well-formed message. Signatures are Ed25519
(64 bytes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from hamrah.secagg.crypto import KEY_BYTES
from hamrah.secagg.messages import _Codec, _ids_bytes, _Reader, _unique, register

SIGNATURE_BYTES = 64
"""Bytes of an Ed25519 signature."""


@register
@dataclass(frozen=True)
class SignedAdvertiseKeys(_Codec):
    """Round 0, client -> server: the two X25519 public keys and the client's signature over them.

    The signature is made with the client's long-term identity key (the PKI) over the round id, the
    client id and both keys (:func:`hamrah.secagg.active.keys_payload`).
    """

    KIND: ClassVar[int] = 8
    round_id: int
    client_id: int
    c_public: bytes
    s_public: bytes
    signature: bytes

    def _body(self) -> bytes:
        return self.c_public + self.s_public + self.signature

    def _body_size(self) -> int:
        return 2 * KEY_BYTES + SIGNATURE_BYTES

    @classmethod
    def _decode(cls, r: _Reader, round_id: int, client_id: int):
        return cls(
            round_id,
            client_id,
            r.take(KEY_BYTES, "c_public"),
            r.take(KEY_BYTES, "s_public"),
            r.take(SIGNATURE_BYTES, "signature"),
        )


@dataclass(frozen=True)
class SignedPeerKeys:
    """One neighbour's public keys and its signature over them, as the server relays them."""

    client_id: int
    c_public: bytes
    s_public: bytes
    signature: bytes


@register
@dataclass(frozen=True)
class SignedKeysBroadcast(_Codec):
    """Round 0 -> 1, server -> one client: its neighbours' signed keys (U1)."""

    KIND: ClassVar[int] = 9
    round_id: int
    client_id: int
    peers: tuple[SignedPeerKeys, ...]

    def _body(self) -> bytes:
        return _ids_bytes(self.peers) + b"".join(
            p.client_id.to_bytes(4, "big") + p.c_public + p.s_public + p.signature for p in self.peers
        )

    def _body_size(self) -> int:
        return 4 + len(self.peers) * (4 + 2 * KEY_BYTES + SIGNATURE_BYTES)

    @classmethod
    def _decode(cls, r: _Reader, round_id: int, client_id: int):
        peers = tuple(
            SignedPeerKeys(
                r.u32("peer id"),
                r.take(KEY_BYTES, "c_public"),
                r.take(KEY_BYTES, "s_public"),
                r.take(SIGNATURE_BYTES, "signature"),
            )
            for _ in range(r.u32("peer count"))
        )
        _unique([p.client_id for p in peers], "SignedKeysBroadcast")
        return cls(round_id, client_id, peers)


@register
@dataclass(frozen=True)
class ConsistencyRequest(_Codec):
    """Round 2 -> ConsistencyCheck, server -> one client: the whole set U3 of clients whose masked input arrived."""

    KIND: ClassVar[int] = 10
    round_id: int
    client_id: int
    contributors: tuple[int, ...]

    def _body(self) -> bytes:
        return _ids_bytes(self.contributors) + b"".join(i.to_bytes(4, "big") for i in self.contributors)

    def _body_size(self) -> int:
        return 4 + 4 * len(self.contributors)

    @classmethod
    def _decode(cls, r: _Reader, round_id: int, client_id: int):
        ids = tuple(r.u32("contributor id") for _ in range(r.u32("contributor count")))
        _unique(ids, "ConsistencyRequest")
        return cls(round_id, client_id, ids)


@register
@dataclass(frozen=True)
class ConsistencySignature(_Codec):
    """ConsistencyCheck, client -> server: the client's signature over the round id and the U3 it was told."""

    KIND: ClassVar[int] = 11
    round_id: int
    client_id: int
    signature: bytes

    def _body(self) -> bytes:
        return self.signature

    def _body_size(self) -> int:
        return SIGNATURE_BYTES

    @classmethod
    def _decode(cls, r: _Reader, round_id: int, client_id: int):
        return cls(round_id, client_id, r.take(SIGNATURE_BYTES, "signature"))


@register
@dataclass(frozen=True)
class ConsistencyBroadcast(_Codec):
    """ConsistencyCheck -> unmasking, server -> one client: ``(signer, signature over U3)`` for every signer (U4)."""

    KIND: ClassVar[int] = 12
    round_id: int
    client_id: int
    signatures: tuple[tuple[int, bytes], ...]

    def _body(self) -> bytes:
        return _ids_bytes(self.signatures) + b"".join(i.to_bytes(4, "big") + s for i, s in self.signatures)

    def _body_size(self) -> int:
        return 4 + len(self.signatures) * (4 + SIGNATURE_BYTES)

    @classmethod
    def _decode(cls, r: _Reader, round_id: int, client_id: int):
        sigs = tuple((r.u32("signer id"), r.take(SIGNATURE_BYTES, "signature")) for _ in range(r.u32("signer count")))
        _unique([i for i, _ in sigs], "ConsistencyBroadcast")
        return cls(round_id, client_id, sigs)
