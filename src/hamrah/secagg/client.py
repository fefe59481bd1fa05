"""The client half of secure aggregation: a state machine with one method per round, no I/O.

Bonawitz et al. 2017, *Practical Secure Aggregation for Privacy-Preserving Machine Learning* (CCS),
Figure 4, semi-honest variant (no signatures, no ConsistencyCheck round); SecAgg+ of Bell et al.
2020 (CCS) when the server relays only the client's neighbours. Each method takes the server's
message for this client and returns the client's reply; a driver (the simulator, the server's device
runtime) carries the bytes.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np

from hamrah.core.errors import AuthError, DropoutThresholdExceeded, ProtocolError
from hamrah.secagg import crypto, shamir
from hamrah.secagg.config import SecAggConfig
from hamrah.secagg.messages import (
    AdvertiseKeys,
    KeysBroadcast,
    MaskedInput,
    PeerKeys,
    ShareKeys,
    SharesBroadcast,
    UnmaskRequest,
    UnmaskShares,
)
from hamrah.secagg.ring import pack, quantize, reduce, ring_dtype

_ORDER = ("advertise_keys", "share_keys", "masked_input", "unmasking", "done")


def _x(client_id: int) -> int:
    """The Shamir point of a client (ids start at 0, points at 1)."""
    return client_id + 1


class SecAggClient:
    """One client of one secure-aggregation round.

    Args:
        client_id: this client's id (0 <= id < 2^32 - 1).
        config: the round's settings, the same as the server's.
        round_id: the round this client takes part in; every message carries it.
        randbytes: ``n -> n random bytes``: ``os.urandom`` (default) for real clients, a
            ``DeterministicRandom`` for reproducible simulations.

    Example:
        >>> client = SecAggClient(0, SecAggConfig(num_clients=3, vector_length=4))
        >>> client.advertise_keys().nbytes
        80
    """

    _ORDER = _ORDER
    """The stages in order; the actively secure client inserts its consistency check."""

    def __init__(
        self, client_id: int, config: SecAggConfig, *, round_id: int = 0, randbytes: Callable[[int], bytes] = os.urandom
    ):
        self.client_id, self.config, self.round_id = client_id, config, round_id
        self._rand = randbytes
        self._stage = self._ORDER[0]
        self._peers: dict[int, PeerKeys] = {}
        self._received: dict[int, tuple[int, int]] = {}  # sender -> (share of s_sender^SK, share of b_sender)

    def advertise_keys(self) -> AdvertiseKeys:
        """Round 0: generate the key pairs (c_u, s_u) and return their public halves."""
        self._advance("advertise_keys")
        c_sk, c_pk = crypto.keypair(self._rand)
        self._s_sk, s_pk = crypto.keypair(self._rand)
        self._c_key, self._s_key = crypto.private_key(c_sk), crypto.private_key(self._s_sk)
        return AdvertiseKeys(self.round_id, self.client_id, c_pk, s_pk)

    def share_keys(self, message: KeysBroadcast) -> ShareKeys:
        """Round 1: draw b_u, Shamir-share b_u and s_u^SK among U1's holders, seal each neighbour's pair.

        Raises:
            ProtocolError: the message is for another client or round, or lists this client or repeated keys.
            DropoutThresholdExceeded: fewer than t holders (this client and its neighbours) advertised.
        """
        self._check(message, KeysBroadcast, "share_keys")
        peers = {p.client_id: p for p in message.peers}
        self._check_peers(peers)
        self._peers = peers
        self._check_threshold("share_keys", len(peers) + 1)
        self._b = self._rand(crypto.KEY_BYTES)
        xs = [_x(self.client_id)] + [_x(v) for v in peers]
        t = self.config.threshold
        s_shares = shamir.split(int.from_bytes(self._s_sk, "big"), t, xs, self._rand)
        b_shares = shamir.split(int.from_bytes(self._b, "big"), t, xs, self._rand)
        self._own = (s_shares[xs[0]], b_shares[xs[0]])
        cts = []
        self._enc_keys = {v: crypto.agree(self._c_key, p.c_public, b"enc", self.round_id) for v, p in peers.items()}
        for v, key in self._enc_keys.items():
            plain = s_shares[_x(v)].to_bytes(shamir.SHARE_BYTES, "big") + b_shares[_x(v)].to_bytes(
                shamir.SHARE_BYTES, "big"
            )
            cts.append((v, crypto.seal(key, self.client_id, v, self.round_id, plain)))
        return ShareKeys(self.round_id, self.client_id, tuple(cts))

    def masked_input(self, message: SharesBroadcast, x: np.ndarray) -> MaskedInput:
        """Round 2: open the shares sent to this client (U2), return x_u quantized and double-masked.

        y_u = q(x_u) + PRG(b_u) + sum_{v in A, v < u} PRG(s_uv) - sum_{v in A, v > u} PRG(s_uv)  mod 2^k,

        A the senders whose ciphertext opened. A sender whose ciphertext does not (it fails authentication,
        or holds no field elements) is *rejected*: left out of A as if it had sent this client nothing, and
        listed in the reply's ``rejected``; the server then leaves it out of the round. One sender of
        garbage so costs its own input, not the round.

        Raises:
            ProtocolError: wrong round, client or stage; a sender that is not a neighbour; a bad input vector.
            DropoutThresholdExceeded: fewer than t holders are left in A (and this client).
        """
        self._check(message, SharesBroadcast, "masked_input")
        x = self._check_input(x)
        senders = [v for v, _ in message.ciphertexts]
        if not set(senders) <= set(self._peers):
            raise ProtocolError(
                f"client {self.client_id}: shares from {sorted(set(senders) - set(self._peers))}, "
                f"which are not among its neighbours"
            )
        rejected = []
        for v, ct in message.ciphertexts:
            pair = self._open(v, ct)
            if pair is None:
                rejected.append(v)
            else:
                self._received[v] = pair
        self._check_threshold("masked_input", len(self._received) + 1)
        cfg = self.config
        dtype = ring_dtype(cfg.ring_bits)
        y = x.astype(dtype) if cfg.prequantized else quantize(x, cfg.clip, cfg.input_bits, dtype)
        y += crypto.prg(crypto.derive(self._b, b"self-mask", self.round_id), cfg.vector_length, dtype)
        for v in self._received:
            p = crypto.prg(
                crypto.agree(self._s_key, self._peers[v].s_public, b"mask", self.round_id), cfg.vector_length, dtype
            )
            if self.client_id > v:
                y += p
            else:
                y -= p
        y = reduce(y, cfg.ring_bits)
        return MaskedInput(
            self.round_id,
            self.client_id,
            cfg.ring_bits,
            cfg.vector_length,
            pack(y, cfg.ring_bits),
            tuple(sorted(rejected)),
        )

    def _open(self, v: int, ct: bytes) -> tuple[int, int] | None:
        """Return sender v's (share of s_v^SK, share of b_v) for this client, or None if they do not open."""
        try:
            plain = crypto.open_sealed(self._enc_keys[v], v, self.client_id, self.round_id, ct)
        except AuthError:
            return None
        half = shamir.SHARE_BYTES
        s_share, b_share = int.from_bytes(plain[:half], "big"), int.from_bytes(plain[half:], "big")
        if len(plain) != 2 * half or s_share >= shamir.PRIME or b_share >= shamir.PRIME:
            return None
        return s_share, b_share

    def unmask(self, message: UnmaskRequest) -> UnmaskShares:
        """Round 3: reveal shares of b_v for survivors v (U3) and of s_v^SK for neighbours that dropped.

        Never reveals both secrets of one client: the survivors and the dropped are disjoint.

        Raises:
            ProtocolError: wrong round, client or stage; this client is not listed as a survivor; a survivor
                this client holds no shares of.
            DropoutThresholdExceeded: fewer than t holders survived to U3.
        """
        self._check(message, UnmaskRequest, "unmasking")
        survivors = set(message.survivors)
        if self.client_id not in survivors:
            raise ProtocolError(f"client {self.client_id} asked to unmask but not listed among the survivors")
        survivors.discard(self.client_id)
        if not survivors <= set(self._received):
            raise ProtocolError(
                f"client {self.client_id}: survivors {sorted(survivors - set(self._received))} "
                f"sent it no shares in round 1 (expected survivors within U2)"
            )
        self._check_threshold("unmasking", len(survivors) + 1)
        b_shares = [(self.client_id, self._own[1])] + [(v, self._received[v][1]) for v in sorted(survivors)]
        s_shares = [(v, self._received[v][0]) for v in sorted(set(self._received) - survivors)]
        return UnmaskShares(self.round_id, self.client_id, tuple(b_shares), tuple(s_shares))

    def _advance(self, stage: str) -> None:
        if self._stage != stage:
            raise ProtocolError(
                f"client {self.client_id}: {stage} called out of order, the client is at stage {self._stage!r}"
            )
        self._stage = self._ORDER[self._ORDER.index(stage) + 1]

    def _check(self, message, kind, stage: str) -> None:
        if not isinstance(message, kind):
            raise ProtocolError(
                f"client {self.client_id}: expected {kind.__name__} for {stage}, got {type(message).__name__}"
            )
        if message.round_id != self.round_id or message.client_id != self.client_id:
            raise ProtocolError(
                f"client {self.client_id}: message for client {message.client_id} in round "
                f"{message.round_id}, expected client {self.client_id} in round {self.round_id}"
            )
        self._advance(stage)

    def _check_peers(self, peers: dict[int, PeerKeys]) -> None:
        if self.client_id in peers:
            raise ProtocolError(f"client {self.client_id}: KeysBroadcast lists the client as its own neighbour")
        if len(peers) > self.config.holders - 1:
            raise ProtocolError(
                f"client {self.client_id}: {len(peers)} neighbours, at most {self.config.holders - 1} expected"
            )
        keys = [k for p in peers.values() for k in (p.c_public, p.s_public)]
        if len(set(keys)) != len(keys):
            raise ProtocolError(f"client {self.client_id}: KeysBroadcast repeats a public key")

    def _check_threshold(self, stage: str, holders: int) -> None:
        if holders < self.config.threshold:
            raise DropoutThresholdExceeded(
                f"client {self.client_id} aborts at stage {stage!r}: {holders} holders of its shares are left "
                f"(itself and surviving neighbours), the threshold is t={self.config.threshold}"
            )

    def _check_input(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        if x.shape != (self.config.vector_length,):
            raise ProtocolError(
                f"client {self.client_id}: input of shape {x.shape}, expected ({self.config.vector_length},)"
            )
        if not np.issubdtype(x.dtype, np.number) or not np.all(np.isfinite(x)):
            raise ProtocolError(f"client {self.client_id}: input must be finite numbers")
        if self.config.prequantized and not (
            np.issubdtype(x.dtype, np.integer) and np.all(x >= 0) and np.all(x < (1 << self.config.ring_bits))
        ):
            raise ProtocolError(
                f"client {self.client_id}: prequantized input must be integers in [0, 2^{self.config.ring_bits})"
            )
        return x
