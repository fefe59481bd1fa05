"""The server half of secure aggregation: a state machine that collects each round and broadcasts the next.

Bonawitz et al. 2017, *Practical Secure Aggregation for Privacy-Preserving Machine Learning* (CCS),
Figure 4, semi-honest variant; SecAgg+ of Bell et al. 2020 (CCS) when the config has a neighbour
degree. ``receive`` takes one client message (any order within a round); ``close_*`` ends the round,
checks the drop-out threshold and returns the per-client messages of the next one. No I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from hamrah.core.errors import DropoutThresholdExceeded, ProtocolError
from hamrah.secagg import crypto, shamir
from hamrah.secagg.client import _x
from hamrah.secagg.config import SecAggConfig
from hamrah.secagg.graph import masking_graph
from hamrah.secagg.messages import (
    AdvertiseKeys,
    KeysBroadcast,
    MaskedInput,
    PeerKeys,
    ShareKeys,
    SharesBroadcast,
    UnmaskRequest,
    UnmaskShares,
    decode,
)
from hamrah.secagg.rejections import left_out, rejecters
from hamrah.secagg.ring import dequantize_sum, reduce, ring_dtype, unpack

STAGES = ("advertise_keys", "share_keys", "masked_input", "unmasking")
"""The four rounds, in order; a client dropped "at" a stage sends nothing from that stage on."""

_EXPECTED = dict(zip(STAGES, (AdvertiseKeys, ShareKeys, MaskedInput, UnmaskShares)))


@dataclass(frozen=True)
class AggregateResult:
    """The outcome of one round of secure aggregation.

    Attributes:
        sum: the float sum of the inputs of ``contributors`` (dequantized).
        ring_sum: the same sum in Z_{2^k}, before dequantization.
        contributors: U3, the clients whose masked input is in the sum.
        survivors: the clients that completed each stage (U1 .. U4), by stage name.
        self_masks_removed: clients whose b_u was rebuilt (= contributors).
        keys_rebuilt: dropped clients whose s_u^SK was rebuilt to cancel their pairwise masks.
        rejected: ``client -> the senders whose share ciphertext it could not open`` (its accusations).
        left_out: clients whose masked input arrived but was left out of the sum for accusations
            (:mod:`hamrah.secagg.rejections`); treated as dropped, only their s_u^SK rebuilt.
    """

    sum: np.ndarray
    ring_sum: np.ndarray
    contributors: tuple[int, ...]
    survivors: dict[str, tuple[int, ...]]
    self_masks_removed: tuple[int, ...]
    keys_rebuilt: tuple[int, ...]
    rejected: dict[int, tuple[int, ...]] = field(default_factory=dict)
    left_out: tuple[int, ...] = ()


class SecAggServer:
    """The server of one secure-aggregation round.

    Args:
        config: the round's settings, the same as the clients'.
        round_id: the round; messages of other rounds are refused.
        graph_seed: seeds the SecAgg+ neighbour graph (unused by full SecAgg).
        client_ids: the clients of the round; default ``range(config.num_clients)``.
    """

    stages: tuple[str, ...] = STAGES
    """The rounds in order; the actively secure server inserts its consistency check."""
    _expected: ClassVar[Mapping[str, type]] = _EXPECTED

    def __init__(
        self, config: SecAggConfig, *, round_id: int = 0, graph_seed: int = 0, client_ids: Sequence[int] | None = None
    ):
        ids = list(range(config.num_clients)) if client_ids is None else [int(i) for i in client_ids]
        if len(ids) != config.num_clients or len(set(ids)) != len(ids) or not all(0 <= i < 2**32 - 1 for i in ids):
            raise ProtocolError(f"client_ids must be {config.num_clients} distinct ids in [0, 2^32 - 1)")
        self.config, self.round_id = config, round_id
        self.graph = masking_graph(ids, config.neighbours, graph_seed)
        self.stage = self.stages[0]
        self._inbox: dict[str, dict[int, object]] = {s: {} for s in self.stages}
        self._alive: dict[str, set[int]] = {"start": set(ids)}
        self._total = np.zeros(config.vector_length, dtype=ring_dtype(config.ring_bits))
        self._coeff_cache: dict[tuple, list[int]] = {}
        self.share_liars: dict[int, str] = {}
        """Holders found sending a wrong share at unmasking (id -> what), whose shares were all left out."""
        self.rejected: dict[int, tuple[int, ...]] = {}
        """Clients that could not open some senders' shares: ``client -> those senders`` (its accusations)."""
        self.left_out: set[int] = set()
        """Clients whose masked input arrived but was left out of the sum for accusations."""
        self._masked: dict[int, bytes] = {}  # packed masked inputs, until close_masked_input settles accusations
        self._rejecters: dict[int, set[int]] = {}

    def receive(self, message) -> None:
        """Take one client message of the current round (a message object or its bytes).

        Raises:
            ProtocolError: malformed bytes, a message of another kind, round or stage, an unknown client,
                a client that did not finish the previous stage, a duplicate, or contents that break the
                protocol (wrong recipients, wrong vector length or ring, wrong share owners).
        """
        if isinstance(message, (bytes, bytearray, memoryview)):
            message = decode(message)
        expected = self._expected.get(self.stage)
        if expected is None or not isinstance(message, expected):
            raise ProtocolError(
                f"got {type(message).__name__} while the server is at stage {self.stage!r}, "
                f"expected {expected.__name__ if expected else 'nothing (the round is over)'}"
            )
        u = message.client_id
        if message.round_id != self.round_id:
            raise ProtocolError(f"client {u}: message of round {message.round_id}, this is round {self.round_id}")
        if u not in self._previous_alive():
            raise ProtocolError(
                f"client {u} is not a survivor of the previous stage, cannot take part in {self.stage!r}"
            )
        if u in self._inbox[self.stage]:
            raise ProtocolError(f"client {u} sent a second {type(message).__name__} in stage {self.stage!r}")
        getattr(self, "_check_" + self.stage)(message)
        # A masked vector is folded into the running sum on arrival; its packed bytes are kept until the
        # stage closes, in case accusations leave it out of the sum.
        self._inbox[self.stage][u] = None if isinstance(message, MaskedInput) else message

    def close_advertise_keys(self) -> dict[int, KeysBroadcast]:
        """End round 0; return each survivor's neighbours' public keys (U1)."""
        u1 = self._close("advertise_keys")
        keys = self._inbox["advertise_keys"]
        return {
            u: KeysBroadcast(
                self.round_id,
                u,
                tuple(PeerKeys(v, keys[v].c_public, keys[v].s_public) for v in sorted(self.graph[u] & u1)),
            )
            for u in sorted(u1)
        }

    def close_share_keys(self) -> dict[int, SharesBroadcast]:
        """End round 1; route each ciphertext to its receiver (U2)."""
        u2 = self._close("share_keys")
        routed: dict[int, list] = {u: [] for u in u2}
        for sender in sorted(u2):
            for receiver, ct in self._inbox["share_keys"][sender].ciphertexts:
                if receiver in u2:
                    routed[receiver].append((sender, ct))
        return {u: SharesBroadcast(self.round_id, u, tuple(cts)) for u, cts in routed.items()}

    def close_masked_input(self) -> dict[int, UnmaskRequest]:
        """End round 2; tell each contributor which of its share holders contributed (U3).

        Clients left out for accusations (:meth:`_settle_rejections`) are not contributors: they are
        treated as dropped before their masked input.
        """
        u3 = self._close("masked_input", self._settle_rejections())
        return {u: UnmaskRequest(self.round_id, u, tuple(sorted(self._view(u) & u3))) for u in sorted(u3)}

    def close_unmasking(self) -> AggregateResult:
        """End round 3: rebuild b_u for u in U3 and s_u^SK for dropped u in U2 \\ U3, remove the masks.

        Raises:
            DropoutThresholdExceeded: a secret that must be rebuilt has fewer than t surviving holders.
            ProtocolError: a rebuilt mask key does not match the public key its owner advertised.
        """
        self._close("unmasking")
        u3 = self._alive["masked_input"]
        cfg, dtype = self.config, self._total.dtype
        total = self._total.copy()
        for b in self._rebuild(sorted(u3), 0).values():
            total -= crypto.prg(
                crypto.derive(b.to_bytes(32, "big"), b"self-mask", self.round_id), cfg.vector_length, dtype
            )
        dropped = sorted(self._needed(u3) - u3)  # includes the clients left out for accusations
        rebuilt = self._rebuild(dropped, 1)
        for u, secret in rebuilt.items():
            s_sk = crypto.private_key(secret.to_bytes(32, "big"))
            if s_sk.public_key().public_bytes_raw() != self._inbox["advertise_keys"][u].s_public:
                raise ProtocolError(
                    f"the rebuilt mask key of client {u} does not match its advertised key: a share holder "
                    f"sent a wrong share, and too few further shares came to tell which"
                )
            for v in (self.graph[u] & u3) - self._rejecters.get(u, set()):  # the contributors that masked with u
                p = crypto.prg(
                    crypto.agree(s_sk, self._inbox["advertise_keys"][v].s_public, b"mask", self.round_id),
                    cfg.vector_length,
                    dtype,
                )
                if v > u:
                    total -= p
                else:
                    total += p
        ring_sum = reduce(total, cfg.ring_bits)
        return AggregateResult(
            sum=ring_sum.astype(np.float64)
            if cfg.prequantized
            else dequantize_sum(ring_sum, len(u3), cfg.clip, cfg.input_bits),
            ring_sum=ring_sum,
            contributors=tuple(sorted(u3)),
            survivors={s: tuple(sorted(self._alive[s])) for s in self.stages},
            self_masks_removed=tuple(sorted(u3)),
            keys_rebuilt=tuple(rebuilt),
            rejected=dict(self.rejected),
            left_out=tuple(sorted(self.left_out)),
        )

    # -- stage bookkeeping ----------------------------------------------------------------------------

    def _previous_alive(self) -> set[int]:
        i = self.stages.index(self.stage)
        return self._alive["start" if i == 0 else self.stages[i - 1]]

    def _view(self, u: int) -> set[int]:
        """The senders whose shares u opened in round 2 (those forwarded to it that it did not reject), u
        included: the clients u masked with, and holds shares of."""
        return ((self.graph[u] & self._alive["share_keys"]) - set(self.rejected.get(u, ()))) | {u}

    def _settle_rejections(self) -> set[int]:
        """Leave out clients so that no contributor rejected another (:func:`rejections.left_out`); return the
        contributors. The left-out clients' masked inputs are taken back out of the running sum."""
        arrived = set(self._inbox["masked_input"])
        self.left_out = left_out(self.rejected, arrived)
        for v in self.left_out:
            self._total -= unpack(self._masked[v], self.config.ring_bits, self.config.vector_length)
        self._masked.clear()
        self._rejecters = rejecters(self.rejected)
        return arrived - self.left_out

    def _close(self, stage: str, alive: set[int] | None = None) -> set[int]:
        if self.stage != stage:
            raise ProtocolError(f"close_{stage} called while the server is at stage {self.stage!r}")
        alive = set(self._inbox[stage]) if alive is None else alive
        self._alive[stage] = alive
        self._check_threshold(stage, alive)
        self.stage = self.stages[self.stages.index(stage) + 1] if stage != self.stages[-1] else "done"
        return alive

    def _check_threshold(self, stage: str, alive: set[int]) -> None:
        t, n = self.config.threshold, self.config.num_clients
        if self.config.neighbours is None or not alive:
            if len(alive) < t:
                raise DropoutThresholdExceeded(
                    f"secure aggregation aborted at stage {stage!r}: {len(alive)} of {n} "
                    f"clients survived, the threshold is t={t}"
                )
            return
        if stage == "unmasking":
            return  # checked per secret in _rebuild
        for u in sorted(alive if stage in STAGES[:2] else self._needed(alive)):
            left = len(((self.graph[u] | {u}) & alive) - self._rejecters.get(u, set()))  # holders that opened
            if left < t:
                raise DropoutThresholdExceeded(
                    f"secure aggregation (SecAgg+) aborted at stage {stage!r}: client {u} has {left} surviving "
                    f"holders of its shares (itself and its neighbours), the threshold is t={t}; "
                    f"{len(alive)} of {n} clients survived"
                )

    def _needed(self, u3: set[int]) -> set[int]:
        """Clients whose secrets unmasking must rebuild: b_u of U3, s_u^SK of the non-contributors some
        contributor masked with (a neighbour in U2 that it did not reject)."""
        return u3 | {u for u in self._alive["share_keys"] - u3 if (self.graph[u] & u3) - self._rejecters.get(u, set())}

    def _rebuild(self, owners: list[int], which: int) -> dict[int, int]:
        """Rebuild secret ``which`` (0: b_u, 1: s_u^SK) of each owner from the shares sent in round 3.

        Each secret is interpolated from its first t shares and checked against the next two (when sent):
        a holder whose share is off the polynomial is located (:func:`shamir.locate_liar`), recorded in
        ``share_liars`` and all its shares are left out, so one lying holder can neither poison the sum
        nor stop the round while t honest holders remain. Nothing more is revealed: the shares are the
        ones the protocol asked for.

        Raises:
            DropoutThresholdExceeded: fewer than t (honest) holders returned shares of a secret.
            ProtocolError: the shares of a secret are inconsistent and no single holder explains it.
        """
        t, out = self.config.threshold, {}
        name = ("self-mask seed b_u", "mask key s_u^SK")[which]
        u4 = self._inbox["unmasking"]
        by_holder = {h: dict((m.self_mask_shares, m.key_shares)[which]) for h, m in u4.items()}
        for u in owners:
            while True:
                shares = {_x(h): held[u] for h, held in by_holder.items() if u in held and h not in self.share_liars}
                if len(shares) < t:
                    raise DropoutThresholdExceeded(
                        f"secure aggregation aborted at stage 'unmasking': {len(shares)} holders returned shares "
                        f"of client {u}'s {name}, the threshold is t={t}; {len(u4)} of {self.config.num_clients} "
                        f"clients survived"
                        + (f", holders {sorted(self.share_liars)} sent wrong shares" if self.share_liars else "")
                    )
                xs = tuple(sorted(shares)[:t])
                extra = tuple(sorted(shares)[t : t + 2])
                out[u] = shamir.combine(self._coeffs(xs, 0), [shares[x] for x in xs])
                residuals = [
                    (shamir.combine(self._coeffs(xs, k), [shares[x] for x in xs]) - shares[k]) % shamir.PRIME
                    for k in extra
                ]
                if not any(residuals):
                    break
                liar = shamir.locate_liar(xs, extra, residuals)
                if liar is None:
                    raise ProtocolError(
                        f"secure aggregation aborted at stage 'unmasking': the shares of client {u}'s {name} "
                        f"from holders {[x - 1 for x in xs + extra]} do not lie on one polynomial of degree "
                        f"t - 1 = {t - 1}, and no single holder explains it"
                    )
                self.share_liars[liar - 1] = f"a share of client {u}'s {name} off the polynomial of the others"
        return out

    def _coeffs(self, xs: tuple[int, ...], at: int) -> list[int]:
        """Lagrange coefficients over ``xs`` at ``at``, cached: the same survivors hold most secrets' shares."""
        key = (xs, at)
        if key not in self._coeff_cache:
            self._coeff_cache[key] = shamir.lagrange_at_zero(xs) if at == 0 else shamir.lagrange_at(xs, at)
        return self._coeff_cache[key]

    # -- per-stage message checks ---------------------------------------------------------------------

    def _check_advertise_keys(self, m: AdvertiseKeys) -> None:
        if m.c_public == m.s_public:
            raise ProtocolError(f"client {m.client_id} advertised the same key for encryption and masking")

    def _check_share_keys(self, m: ShareKeys) -> None:
        expected = self.graph[m.client_id] & self._alive["advertise_keys"]
        got = {v for v, _ in m.ciphertexts}
        if got != expected:
            raise ProtocolError(
                f"client {m.client_id} sent ciphertexts for {sorted(got)}, expected one for each "
                f"neighbour in U1: {sorted(expected)}"
            )

    def _check_masked_input(self, m: MaskedInput) -> None:
        cfg = self.config
        if m.ring_bits != cfg.ring_bits or m.length != cfg.vector_length:
            raise ProtocolError(
                f"client {m.client_id}: masked input of {m.length} {m.ring_bits}-bit values, "
                f"expected {cfg.vector_length} {cfg.ring_bits}-bit values"
            )
        forwarded = self.graph[m.client_id] & self._alive["share_keys"]  # the senders routed to it
        if not set(m.rejected) <= forwarded:
            raise ProtocolError(
                f"client {m.client_id}: rejects the shares of {sorted(set(m.rejected) - forwarded)}, which were "
                f"not sent to it (its senders: {sorted(forwarded)})"
            )
        self._total += unpack(m.data, m.ring_bits, m.length)
        self._masked[m.client_id] = m.data
        if m.rejected:
            self.rejected[m.client_id] = tuple(sorted(m.rejected))

    def _check_unmasking(self, m: UnmaskShares) -> None:
        view, u3 = self._view(m.client_id), self._alive["masked_input"]
        want_b, want_s = view & u3, view - u3
        got_b, got_s = {v for v, _ in m.self_mask_shares}, {v for v, _ in m.key_shares}
        if got_b != want_b or got_s != want_s:
            raise ProtocolError(
                f"client {m.client_id}: shares of b_v for {sorted(got_b)} and of s_v^SK for "
                f"{sorted(got_s)}, expected b_v for {sorted(want_b)} and s_v^SK for {sorted(want_s)}"
            )
