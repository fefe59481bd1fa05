"""Secure aggregation against a malicious server: signed key advertisements and the ConsistencyCheck round.

Bonawitz et al. 2017, *Practical Secure Aggregation for Privacy-Preserving Machine Learning* (CCS),
Figure 4, the actively secure variant (the parts marked "only for active security"):

- **PKI.** Every client holds a long-term Ed25519 identity key; every party knows the map
  ``client id -> public identity key`` (``verify_keys``). Both are parameters here: on a device they are the
  device identity key and the fleet's registered keys.
- **Signed AdvertiseKeys.** A client signs (round id, its id, c_u^PK, s_u^PK). Every client checks its
  neighbours' signatures before it shares anything, so a server cannot substitute keys it knows the
  private halves of (which would let it open the shares or the pairwise masks).
- **ConsistencyCheck**, between MaskedInput and Unmasking. The server sends every contributor the *whole*
  set U3 of clients whose masked input it claims to have; each client checks U3 (it is listed, every
  neighbour in U3 sent it shares), signs (round id, U3) and sends the signature. The server relays the
  signatures of all signers U4; a client reveals shares only when at least T signatures, every one valid
  over *its own* U3, arrived. A client signs once per round, so when T > n/2 two different sets cannot
  both collect T signatures of honest clients: every honest client that reveals anything reveals it for
  the same U3, and so never a share of b_v to one and of s_v^SK to another. Against c colluding clients
  T > (n + c) / 2 is needed (:func:`resolve_consistency_threshold`; the paper analyses t > 2n/3 with n/3 corrupt).
  U3 is the contributor set *after* rejections (clients left out because others could not open their
  shares, :mod:`hamrah.secagg.rejections`), so the check covers them too; a client refuses to sign a U3
  that holds a sender it rejected.

What differs from the paper: the threshold of the consistency round is a majority of all n clients
(:func:`resolve_consistency_threshold`), also for SecAgg+, where each client then receives O(n) signatures (the
paper's variant is full SecAgg; Bell et al. 2020 state their malicious variant differently). Hence
SecAgg+ in active mode tolerates fewer drop-outs than in semi-honest mode.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import ClassVar

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from hamrah.core.errors import AuthError, ConfigError, DropoutThresholdExceeded, ProtocolError
from hamrah.secagg.active_messages import (
    ConsistencyBroadcast,
    ConsistencyRequest,
    ConsistencySignature,
    SignedAdvertiseKeys,
    SignedKeysBroadcast,
    SignedPeerKeys,
)
from hamrah.secagg.client import SecAggClient
from hamrah.secagg.config import SecAggConfig
from hamrah.secagg.crypto import DeterministicRandom
from hamrah.secagg.messages import KeysBroadcast, MaskedInput, PeerKeys, ShareKeys, UnmaskRequest, UnmaskShares
from hamrah.secagg.server import STAGES, SecAggServer

ACTIVE_STAGES = STAGES[:3] + ("consistency_check",) + STAGES[3:]
"""The five rounds of the actively secure protocol, in order."""

_LABEL = b"hamrah-secagg-active/1/"


def keys_payload(round_id: int, client_id: int, c_public: bytes, s_public: bytes, session: bytes = b"") -> bytes:
    """Return the bytes a client signs in AdvertiseKeys: label, round id, client id, both public keys and
    the session id (empty in memory; over a network :func:`hamrah.secagg.roster.session_id`)."""
    return (
        _LABEL + b"keys/" + round_id.to_bytes(8, "big") + client_id.to_bytes(4, "big") + c_public + s_public + session
    )


def contributors_payload(round_id: int, contributors: Sequence[int], session: bytes = b"") -> bytes:
    """Return the bytes a client signs in the ConsistencyCheck: label, round id, the sorted set U3 and the
    session id."""
    ids = sorted(contributors)
    return (
        _LABEL
        + b"u3/"
        + round_id.to_bytes(8, "big")
        + len(ids).to_bytes(4, "big")
        + b"".join(i.to_bytes(4, "big") for i in ids)
        + session
    )


def identity_public_key(private: bytes | Ed25519PrivateKey) -> bytes:
    """Return the raw 32-byte Ed25519 public key of an identity key (raw 32 bytes or a key object)."""
    return _private(private).public_key().public_bytes_raw()


def resolve_consistency_threshold(config: SecAggConfig, value: int | None = None) -> int:
    """Return T, the valid ConsistencyCheck signatures a client needs: default max(t, n // 2 + 1).

    Raises:
        ConfigError: ``value`` is not an integer in [n // 2 + 1, n] (two disjoint halves could then each
            collect T signatures for different contributor sets).
    """
    n = config.num_clients
    low = n // 2 + 1
    if value is None:
        return max(config.threshold, low) if config.neighbours is None else low
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= n:
        raise ConfigError(
            f"consistency_threshold must be an integer in [{low}, {n}] (more than half of the "
            f"{n} clients, so that only one contributor set can be certified), got {value!r}"
        )
    return value


def simulated_identities(num_clients: int, seed: int) -> dict[int, bytes]:
    """Return seeded Ed25519 identity keys ``{u: 32 raw bytes}`` for a simulation; never for real devices."""
    rand = DeterministicRandom(b"identities/" + int(seed).to_bytes(16, "big", signed=True))
    return {u: rand(32) for u in range(num_clients)}


def _private(key: bytes | Ed25519PrivateKey) -> Ed25519PrivateKey:
    if isinstance(key, Ed25519PrivateKey):
        return key
    if not isinstance(key, (bytes, bytearray)) or len(key) != 32:
        raise ConfigError("an identity signing key must be an Ed25519 private key or its 32 raw bytes")
    return Ed25519PrivateKey.from_private_bytes(bytes(key))


def _public_keys(verify_keys: Mapping[int, bytes]) -> dict[int, Ed25519PublicKey]:
    out = {}
    for u, raw in verify_keys.items():
        if not isinstance(raw, (bytes, bytearray)) or len(raw) != 32:
            raise ConfigError(f"verify_keys[{u}] must be a raw 32-byte Ed25519 public key")
        out[int(u)] = Ed25519PublicKey.from_public_bytes(bytes(raw))
    return out


def _verify(
    keys: Mapping[int, Ed25519PublicKey], signer: int, signature: bytes, payload: bytes, what: str, who: str
) -> None:
    """Raise AuthError unless ``signature`` is ``signer``'s valid Ed25519 signature over ``payload``."""
    if signer not in keys:
        raise AuthError(f"{who}: no identity key is registered for client {signer} ({what})")
    try:
        keys[signer].verify(signature, payload)
    except InvalidSignature:
        raise AuthError(f"{who}: client {signer}'s signature over its {what} does not verify") from None


class ActiveSecAggClient(SecAggClient):
    """A client of the actively secure protocol: signs its keys and takes part in the ConsistencyCheck.

    Args:
        client_id, config, round_id, randbytes: as for :class:`SecAggClient`.
        signing_key: this client's Ed25519 identity key (raw 32 bytes or a key object).
        verify_keys: ``client id -> raw 32-byte Ed25519 public key`` of every client of the round (the PKI).
        consistency_threshold: T, see :func:`resolve_consistency_threshold`.
        session: the session id every signature covers (:func:`hamrah.secagg.roster.session_id`; empty in
            memory, where the driver runs each session once).

    Raises:
        ConfigError: a key is malformed, or T is out of range.
    """

    _ORDER = ACTIVE_STAGES + ("done",)

    def __init__(
        self,
        client_id: int,
        config: SecAggConfig,
        *,
        signing_key: bytes | Ed25519PrivateKey,
        verify_keys: Mapping[int, bytes],
        round_id: int = 0,
        randbytes: Callable[[int], bytes] = os.urandom,
        consistency_threshold: int | None = None,
        session: bytes = b"",
    ):
        super().__init__(client_id, config, round_id=round_id, randbytes=randbytes)
        self.session = bytes(session)
        self._identity = _private(signing_key)
        self._keys = _public_keys(verify_keys)
        self.consistency_threshold = resolve_consistency_threshold(config, consistency_threshold)
        self._contributors: tuple[int, ...] = ()

    def advertise_keys(self) -> SignedAdvertiseKeys:
        """Round 0: the key pairs of :meth:`SecAggClient.advertise_keys`, signed with the identity key."""
        m = super().advertise_keys()
        signature = self._identity.sign(
            keys_payload(self.round_id, self.client_id, m.c_public, m.s_public, self.session)
        )
        return SignedAdvertiseKeys(m.round_id, m.client_id, m.c_public, m.s_public, signature)

    def share_keys(self, message: SignedKeysBroadcast) -> ShareKeys:
        """Round 1: verify every neighbour's signed keys, then share as in :meth:`SecAggClient.share_keys`.

        Raises:
            AuthError: a neighbour's keys are not signed by its registered identity key (substituted keys).
            ProtocolError, DropoutThresholdExceeded: as for the semi-honest client.
        """
        self._header(message, SignedKeysBroadcast, "share_keys")
        for p in message.peers:
            _verify(
                self._keys,
                p.client_id,
                p.signature,
                keys_payload(self.round_id, p.client_id, p.c_public, p.s_public, self.session),
                "advertised keys",
                f"client {self.client_id} aborts at stage 'share_keys'",
            )
        plain = tuple(PeerKeys(p.client_id, p.c_public, p.s_public) for p in message.peers)
        return super().share_keys(KeysBroadcast(message.round_id, message.client_id, plain))

    def consistency_check(self, message: ConsistencyRequest) -> ConsistencySignature:
        """ConsistencyCheck: check the contributor set U3 the server announces, and sign it.

        Raises:
            ProtocolError: this client is not in U3, U3 names an unregistered client, or a neighbour in U3
                sent this client no shares (U3 must lie within U2).
            DropoutThresholdExceeded: U3 has fewer than T clients.
        """
        self._check(message, ConsistencyRequest, "consistency_check")
        u3, me = set(message.contributors), f"client {self.client_id} aborts at stage 'consistency_check'"
        if self.client_id not in u3:
            raise ProtocolError(f"{me}: it sent its masked input but is not listed among the contributors")
        if not u3 <= set(self._keys):
            raise ProtocolError(f"{me}: contributors {sorted(u3 - set(self._keys))} have no registered identity")
        unshared = (u3 & set(self._peers)) - set(self._received)
        if unshared:
            raise ProtocolError(
                f"{me}: neighbours {sorted(unshared)} are listed as contributors but sent it no "
                f"shares (the contributors must lie within U2)"
            )
        if len(u3) < self.consistency_threshold:
            raise DropoutThresholdExceeded(
                f"{me}: {len(u3)} contributors, the consistency threshold is T={self.consistency_threshold}"
            )
        self._contributors = tuple(sorted(u3))
        signature = self._identity.sign(contributors_payload(self.round_id, self._contributors, self.session))
        return ConsistencySignature(self.round_id, self.client_id, signature)

    def unmask(self, message: ConsistencyBroadcast) -> UnmaskShares:
        """Unmasking: reveal shares only if at least T signers, each validly, signed this client's U3.

        Raises:
            AuthError: a relayed signature is not its signer's over this client's U3 (the server told
                clients different sets, or forged one). Nothing is revealed.
            ProtocolError: a signer is not in U3.
            DropoutThresholdExceeded: fewer than T signatures.
        """
        self._header(message, ConsistencyBroadcast, "unmasking")
        me = f"client {self.client_id} aborts at stage 'unmasking'"
        signers = {v for v, _ in message.signatures}
        if not signers <= set(self._contributors):
            raise ProtocolError(f"{me}: signers {sorted(signers - set(self._contributors))} are not contributors")
        payload = contributors_payload(self.round_id, self._contributors, self.session)
        for v, signature in message.signatures:
            _verify(self._keys, v, signature, payload, "contributor set", me)
        if len(signers) < self.consistency_threshold:
            raise DropoutThresholdExceeded(
                f"{me}: {len(signers)} clients signed the contributor set, the "
                f"consistency threshold is T={self.consistency_threshold}"
            )
        survivors = tuple(sorted(set(self._contributors) & (set(self._received) | {self.client_id})))
        return super().unmask(UnmaskRequest(self.round_id, self.client_id, survivors))

    def _header(self, message, kind, stage: str) -> None:
        """Check kind, round, recipient and stage without advancing (the base method advances)."""
        if not isinstance(message, kind):
            raise ProtocolError(
                f"client {self.client_id}: expected {kind.__name__} for {stage}, got {type(message).__name__}"
            )
        if message.round_id != self.round_id or message.client_id != self.client_id:
            raise ProtocolError(
                f"client {self.client_id}: message for client {message.client_id} in round "
                f"{message.round_id}, expected client {self.client_id} in round {self.round_id}"
            )
        if self._stage != stage:
            raise ProtocolError(
                f"client {self.client_id}: {stage} called out of order, the client is at stage {self._stage!r}"
            )


class ActiveSecAggServer(SecAggServer):
    """The server of the actively secure protocol (an honest one: it checks every signature it relays).

    Args:
        config, round_id, graph_seed, client_ids: as for :class:`SecAggServer`.
        verify_keys: ``client id -> raw 32-byte Ed25519 public key`` of every client of the round.
        consistency_threshold: T, see :func:`resolve_consistency_threshold`.
        session: the session id the clients' signatures cover (see :class:`ActiveSecAggClient`).

    Raises:
        ConfigError: a client of the round has no registered key, a key is malformed, or T is out of range.
    """

    stages = ACTIVE_STAGES
    _expected: ClassVar[Mapping[str, type]] = dict(
        zip(ACTIVE_STAGES, (SignedAdvertiseKeys, ShareKeys, MaskedInput, ConsistencySignature, UnmaskShares))
    )

    def __init__(
        self,
        config: SecAggConfig,
        *,
        verify_keys: Mapping[int, bytes],
        round_id: int = 0,
        graph_seed: int = 0,
        client_ids: Sequence[int] | None = None,
        consistency_threshold: int | None = None,
        session: bytes = b"",
    ):
        super().__init__(config, round_id=round_id, graph_seed=graph_seed, client_ids=client_ids)
        self.session = bytes(session)
        self._keys = _public_keys(verify_keys)
        missing = sorted(set(self.graph) - set(self._keys))
        if missing:
            raise ConfigError(f"clients {missing} of the round have no registered identity key")
        self.consistency_threshold = resolve_consistency_threshold(config, consistency_threshold)

    def close_advertise_keys(self) -> dict[int, SignedKeysBroadcast]:
        """End round 0; return each survivor's neighbours' signed keys (U1)."""
        keys = self._inbox["advertise_keys"]
        return {
            u: SignedKeysBroadcast(
                self.round_id,
                u,
                tuple(
                    SignedPeerKeys(p.client_id, p.c_public, p.s_public, keys[p.client_id].signature) for p in b.peers
                ),
            )
            for u, b in super().close_advertise_keys().items()
        }

    def close_masked_input(self) -> dict[int, ConsistencyRequest]:
        """End round 2; send every contributor the whole contributor set U3 to sign (after the accusations:
        a client left out for them is not in U3, and every signer checks that no sender it rejected is)."""
        u3 = self._close("masked_input", self._settle_rejections())
        self._check_consistency_count("masked_input", u3)
        return {u: ConsistencyRequest(self.round_id, u, tuple(sorted(u3))) for u in sorted(u3)}

    def close_consistency_check(self) -> dict[int, ConsistencyBroadcast]:
        """End the ConsistencyCheck; relay every signature over U3 to every signer (U4)."""
        u4 = self._close("consistency_check")
        signatures = tuple((v, self._inbox["consistency_check"][v].signature) for v in sorted(u4))
        return {u: ConsistencyBroadcast(self.round_id, u, signatures) for u in sorted(u4)}

    def _check_threshold(self, stage: str, alive: set[int]) -> None:
        if stage == "consistency_check":
            self._check_consistency_count(stage, alive)
        else:
            super()._check_threshold(stage, alive)

    def _check_consistency_count(self, stage: str, alive: set[int]) -> None:
        if len(alive) < self.consistency_threshold:
            raise DropoutThresholdExceeded(
                f"secure aggregation aborted at stage {stage!r}: {len(alive)} of {self.config.num_clients} "
                f"clients survived, the consistency threshold is T={self.consistency_threshold}"
            )

    def _check_advertise_keys(self, m: SignedAdvertiseKeys) -> None:
        super()._check_advertise_keys(m)
        _verify(
            self._keys,
            m.client_id,
            m.signature,
            keys_payload(m.round_id, m.client_id, m.c_public, m.s_public, self.session),
            "advertised keys",
            "server",
        )

    def _check_consistency_check(self, m: ConsistencySignature) -> None:
        _verify(
            self._keys,
            m.client_id,
            m.signature,
            contributors_payload(self.round_id, self._alive["masked_input"], self.session),
            "contributor set",
            "server",
        )
