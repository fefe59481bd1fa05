"""Secure aggregation over gRPC: one round of SecAgg / SecAgg+ driven by the Coordinator.

The protocol's state machine is :class:`hamrah.secagg.SecAggServer` (no I/O), the same object the
simulator and the benchmarks drive in memory. This module adds what a network needs: the round's
devices get protocol ids 0..n-1 in selection order; each stage is open until every device still in
the protocol has sent its message or the stage times out; a device's call is held until its stage
closes and is answered with that device's message of the next stage. Before the four rounds of
Bonawitz et al. 2017 comes a JOIN stage: a device that has trained announces its ``num_examples``
(as a plain report does) and learns its id, n and the weight scale W = max n_k over the joined
devices; it then inputs ``(n_k / W) * update`` (1 * update under DP's equal weights), so the server
unmasks sum_k w_k delta_k and divides by sum_k w_k over the contributors.

With ``[secure_aggregation] malicious_server = true`` the round runs the actively secure variant
(:class:`hamrah.secagg.ActiveSecAggServer`, Bonawitz et al. 2017 Figure 4): at JOIN each device also
sends its CA-signed identity certificate and a fresh nonce (:class:`hamrah.secagg.roster.JoinIdentity`);
the server checks that the certificate's key is the one registered for the device, and answers every
device with the same :class:`~hamrah.secagg.roster.Roster` of the joined devices (ids are their
selection positions, n the number that joined). Devices check the roster against their own CA and
bind every signature to its hash; a CONSISTENCY_CHECK stage comes between MASKED_INPUT and UNMASKING.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from hamrah.core.aggregate import Aggregate
from hamrah.core.errors import AuthError, ConfigError, DropoutThresholdExceeded, ProtocolError
from hamrah.core.metrics import Weighted
from hamrah.secagg import ActiveSecAggServer, SecAggServer
from hamrah.secagg.messages import decode
from hamrah.secagg.params import ParamsLayout, unflatten_params
from hamrah.secagg.roster import JoinIdentity, Roster, RosterEntry, session_id
from hamrah.secagg.stage import SecureAggregation
from hamrah.server.influence import check_metrics
from hamrah.transport.codec import decode_metrics
from hamrah.transport.identity import certified_key
from hamrah.transport.plan import DP_EPSILON, PERSONAL_METRICS
from hamrah.transport.proto import fl_pb2 as pb

log = logging.getLogger("hamrah.server")
MAX_EXAMPLES = 10**9
STAGES = (pb.JOIN, pb.ADVERTISE_KEYS, pb.SHARE_KEYS, pb.MASKED_INPUT, pb.UNMASKING)
ACTIVE_STAGES = (pb.JOIN, pb.ADVERTISE_KEYS, pb.SHARE_KEYS, pb.MASKED_INPUT, pb.CONSISTENCY_CHECK, pb.UNMASKING)
NAMES = {
    pb.JOIN: "join",
    pb.ADVERTISE_KEYS: "advertise_keys",
    pb.SHARE_KEYS: "share_keys",
    pb.MASKED_INPUT: "masked_input",
    pb.CONSISTENCY_CHECK: "consistency_check",
    pb.UNMASKING: "unmasking",
}


class SecureRoundAborted(ProtocolError):
    """The round's secure aggregation stopped (too many drop-outs, or a protocol violation)."""


class DroppedFromRound(ProtocolError):
    """The device missed a stage (late, or the round went on without it)."""


@dataclass(frozen=True)
class SecureOutcome:
    """What a completed secure round gives the Coordinator."""

    aggregate: Aggregate  # sums of w_k x_k over the contributors (w_k = n_k, or 1 under DP), and train_loss
    contributors: int
    num_examples: int  # sum of n_k over the contributors
    survivors: dict  # stage name -> devices that completed it
    left_out: int = 0  # devices whose masked input was left out for rejected shares (hamrah.secagg.rejections)

    @property
    def mean(self) -> dict:
        """Return sum_k w_k x_k / sum_k w_k over the contributors, key by key (float32)."""
        a = self.aggregate
        return {k: (v / a.weight).to(a.dtypes.get(k, torch.float32)) for k, v in a.sums.items()}

    @property
    def train_loss(self) -> float:
        """Return the contributors' announced losses, averaged with their aggregation weights."""
        return self.aggregate.metric("train_loss")


def weight_of(num_examples: int, scale: float, equal_weights: bool) -> float:
    """Return a device's input weight w_k: 1 under equal weights, else n_k / W (at most 1)."""
    return 1.0 if equal_weights else num_examples / scale


class SecureRound:
    """One round's secure aggregation over the devices selected for training.

    Args:
        stage: the pipeline's SecureAggregation settings (variant, clip, input_bits).
        layout: the names and shapes of an input (the pipeline's wire spec, flattened in this order).
        task_ids: the round's training tasks, in selection order (protocol id = position).
        round_idx: the round (carried by every protocol message).
        equal_weights: weight every device 1 (DP) instead of n_k.
        stage_timeout_s: how long each stage after JOIN stays open.
        identity_key: ``task id -> raw Ed25519 public key`` registered for the task's device (None: not
            registered); needed when the stage asks for ``malicious_server``.
        max_weight: the most ``num_examples`` one device counts for (the influence bound's weight cap, as
            for plain reports): a JOIN claiming more is counted as ``max_weight``.

    Raises:
        ConfigError: too few devices for the stage's settings, or ``malicious_server`` without identity keys.
    """

    def __init__(
        self,
        stage: SecureAggregation,
        layout: ParamsLayout,
        task_ids: list[str],
        round_idx: int,
        equal_weights: bool,
        stage_timeout_s: float,
        identity_key: Callable[[str], bytes | None] | None = None,
        max_weight: int = MAX_EXAMPLES,
    ):
        self.layout, self.round_idx, self.equal_weights = layout, round_idx, equal_weights
        self.stage_timeout_s = stage_timeout_s
        self.tasks = list(task_ids)
        self.index = {t: u for u, t in enumerate(task_ids)}
        self.n = len(task_ids)
        self.stage = stage
        self.active = bool(getattr(stage, "malicious_server", False))
        self.stages = ACTIVE_STAGES if self.active else STAGES
        if self.active and identity_key is None:
            raise ConfigError(
                "secure_aggregation.malicious_server needs the devices' registered identity keys "
                "(server.tokens_file from `hamrah provision`)"
            )
        self.identity_key, self.max_weight = identity_key, max_weight
        self.config = stage.config(self.n, stage.secure_length(layout.size))  # active: redone over the joined
        self.server = (
            None if self.active else SecAggServer(self.config, round_id=round_idx, graph_seed=secrets.randbits(32))
        )
        self.identities: dict[int, JoinIdentity] = {}
        self.current = 0  # index into self.stages
        self.expected: set[int] = set(range(self.n))  # who may send in the current stage
        self.sent: set[int] = set()
        self.gone: set[int] = set()  # devices known to have left (not waited for)
        self.closed = [asyncio.Event() for _ in self.stages]
        self.replies: list[dict[int, bytes]] = [{} for _ in self.stages]
        self.progress = asyncio.Event()
        self.failure: str | None = None
        self.examples: dict[int, int] = {}
        self.losses: dict[int, float] = {}
        self.dp_epsilon: float | None = None  # DP-SGD: the largest example-level epsilon a device reported
        self.personal: dict[int, dict] = {}  # personalized runs: each device's scores on its held-out examples
        self.scale = 1.0
        self.survivors: dict[str, int] = {}
        self.bytes_up = self.bytes_down = 0  # protocol message bytes received from / sent to devices

    # --- called per device message (from the gRPC service) -------------------------------------

    async def exchange(self, task_id: str, header: pb.SecAggHeader, message: bytes) -> tuple[pb.SecAggHeader, bytes]:
        """Take one device's message of the current stage; when the stage closes, return its next message.

        Raises:
            ProtocolError: a stage out of order, a second message, a malformed or forged message.
            DroppedFromRound: the stage closed without this device. SecureRoundAborted: the round failed.
        """
        u = self.index[task_id]
        i = self._stage_index(header.stage, u)
        if i == 0:
            self._join(u, header, task_id, message)
        else:
            msg = decode(message)
            if msg.client_id != u:
                raise ProtocolError(
                    f"secure aggregation: a message naming client {msg.client_id} from the device with id {u}"
                )
            self.receive(self.stages[i], msg)
        self.sent.add(u)
        self.bytes_up += len(message)
        self.progress.set()
        if self.stages[i] == pb.UNMASKING:
            return pb.SecAggHeader(round=self.round_idx, stage=pb.UNMASKING), b""
        await self.closed[i].wait()
        if self.failure is not None:
            raise SecureRoundAborted(self.failure)
        reply = self.replies[i].get(u)
        if reply is None:
            raise DroppedFromRound(
                f"secure aggregation: the round went on without this device after {NAMES[self.stages[i]]}"
            )
        self.bytes_down += len(reply)
        out = pb.SecAggHeader(round=self.round_idx, stage=self.stages[i], message_bytes=len(reply))
        if i == 0:
            out.client_index, out.num_clients, out.weight_scale = u, self.config.num_clients, self.scale
        return out, reply

    def receive(self, stage: int, message) -> None:
        """Hand one decoded protocol message of ``stage`` to the state machine (a test double may lie here)."""
        self.server.receive(message)

    def _stage_index(self, stage: int, u: int) -> int:
        if stage not in self.stages:
            raise ProtocolError(
                f"secure aggregation: unknown stage {stage}; expected one of {', '.join(NAMES[s] for s in self.stages)}"
            )
        i = self.stages.index(stage)
        if self.failure is not None:
            raise SecureRoundAborted(self.failure)
        if u in self.sent or (i < self.current and u in self.replies[i]):
            raise ProtocolError(f"secure aggregation: a second {NAMES[stage]} message from this device")
        if i < self.current or u not in self.expected:
            raise DroppedFromRound(f"secure aggregation: stage {NAMES[stage]} closed without this device")
        if i > self.current:
            raise ProtocolError(
                f"secure aggregation: a {NAMES[stage]} message while the round is at {NAMES[self.stages[self.current]]}"
            )
        return i

    def _join(self, u: int, header: pb.SecAggHeader, task_id: str, message: bytes) -> None:
        if not 1 <= header.num_examples <= MAX_EXAMPLES:
            raise ProtocolError(f"num_examples = {header.num_examples}: expected 1..{MAX_EXAMPLES}")
        if self.active:  # its certificate must carry the key registered for this device
            join = JoinIdentity.from_bytes(message)
            try:
                _, public = certified_key(join.certificate)
            except AuthError as err:
                raise ProtocolError(f"secure aggregation: {err}") from None
            if public != self.identity_key(task_id):
                raise ProtocolError(
                    "secure aggregation: the identity certificate is not for this device's registered signing key"
                )
            self.identities[u] = join
        elif message:
            raise ProtocolError(
                "secure aggregation: a JOIN carries no message bytes in this round (no malicious_server)"
            )
        metrics = check_metrics(decode_metrics(header.metrics))  # each known metric in its range
        self.examples[u] = min(int(header.num_examples), self.max_weight)  # capped, as a plain report's weight
        if "train_loss" in metrics or "loss" in metrics:  # none under DP-SGD, local or distributed DP
            self.losses[u] = float(metrics.get("train_loss", metrics.get("loss", 0.0)))
        if DP_EPSILON in metrics:  # DP-SGD: the epsilon the device's store has spent (as it says)
            self.dp_epsilon = max(self.dp_epsilon or 0.0, metrics[DP_EPSILON])
        if "held_examples" in metrics:
            self.personal[u] = {k: metrics[k] for k in PERSONAL_METRICS if k in metrics}

    def leave(self, task_id: str) -> None:
        """A device reported ABORTED / FAILED or hung up: stop waiting for it, at this stage and later."""
        u = self.index.get(task_id)
        if u is not None:
            self.gone.add(u)
            self.expected.discard(u)
            self.progress.set()

    # --- driven by the Coordinator -------------------------------------------------------------

    async def run(self, join_deadline: float) -> SecureOutcome | None:
        """Run the stages to the end; return the outcome, or None when the round must be abandoned."""
        for i, stage in enumerate(self.stages):
            deadline = join_deadline if i == 0 else time.monotonic() + self.stage_timeout_s
            await self._wait_stage(deadline)
            try:
                replies = await asyncio.to_thread(self._close, i)
            except (DropoutThresholdExceeded, ProtocolError, AuthError, ConfigError) as err:
                self.failure = str(err)
                log.warning("round %d: secure aggregation aborted at %s: %s", self.round_idx, NAMES[stage], err)
                for event in self.closed:
                    event.set()
                return None
            self.survivors[NAMES[stage]] = len(self.sent)
            if stage == pb.UNMASKING:
                self.closed[i].set()
                return self._outcome(replies)
            self.replies[i] = replies
            self.expected, self.sent, self.current = set(replies) - self.gone, set(), i + 1
            self.closed[i].set()
        return None

    async def _wait_stage(self, deadline: float) -> None:
        while not self.expected <= self.sent:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self.progress.clear()
            try:
                await asyncio.wait_for(self.progress.wait(), left)
            except asyncio.TimeoutError:
                return

    def _close(self, i: int):
        stage = self.stages[i]
        if stage == pb.JOIN:
            joined = sorted(self.sent)
            roster = self._start_active(joined) if self.active else b""
            if len(joined) < self.config.threshold:
                raise DropoutThresholdExceeded(
                    f"secure aggregation aborted at stage 'join': {len(joined)} of {self.n} "
                    f"devices joined, the threshold is t={self.config.threshold}"
                )
            self.scale = float(max(self.examples[u] for u in joined))
            return {u: roster for u in joined}
        out = self.close(stage)
        return out if stage == pb.UNMASKING else {u: m.to_bytes() for u, m in out.items()}

    def close(self, stage: int):
        """Close ``stage`` in the state machine; return its per-device messages (a test double may lie here)."""
        return getattr(self.server, "close_" + NAMES[stage])()

    def _start_active(self, joined: list[int]) -> bytes:
        """Build the actively secure server over the joined devices; return the roster every one of them gets."""
        if len(joined) < 2:
            raise DropoutThresholdExceeded(
                f"secure aggregation aborted at stage 'join': {len(joined)} of {self.n} "
                "devices joined, at least 2 are needed"
            )
        self.config = self.stage.config(len(joined), self.stage.secure_length(self.layout.size))
        roster = Roster(
            self.round_idx,
            tuple(RosterEntry(u, self.identities[u].nonce, self.identities[u].certificate) for u in joined),
        )
        keys = {u: certified_key(self.identities[u].certificate)[1] for u in joined}
        self.server = ActiveSecAggServer(
            self.config,
            verify_keys=keys,
            round_id=self.round_idx,
            graph_seed=secrets.randbits(32),
            client_ids=joined,
            session=session_id(roster),
        )
        return roster.to_bytes()

    def share_liars(self) -> dict[str, str]:
        """Return ``task id -> what it did`` for the devices whose shares at unmasking were found wrong (and
        left out: the sum was rebuilt from the others')."""
        found = getattr(self.server, "share_liars", None) or {}
        return {self.tasks[h]: what for h, what in found.items()}

    def rejections(self) -> tuple[dict[str, list[str]], list[str]]:
        """Return ``(task id -> the task ids whose shares it could not open, the task ids left out of the sum
        for it)``: who accused whom at masked_input (:mod:`hamrah.secagg.rejections`)."""
        server = self.server
        accused = {self.tasks[u]: [self.tasks[v] for v in vs] for u, vs in getattr(server, "rejected", {}).items()}
        return accused, [self.tasks[u] for u in sorted(getattr(server, "left_out", ()))]

    def _outcome(self, result) -> SecureOutcome:
        contributors = list(result.contributors)
        weights = {u: weight_of(self.examples[u], self.scale, self.equal_weights) for u in contributors}
        total = unflatten_params(self.stage.decode_secure(result, self.layout.size, self.round_idx), self.layout)
        mean = {k: (v.double() / sum(weights.values())).float() for k, v in total.items()}
        n = sum(self.examples[u] for u in contributors)
        agg_w = {u: 1.0 if self.equal_weights else float(self.examples[u]) for u in contributors}  # w_k
        told = [u for u in contributors if u in self.losses]
        metrics = (
            {"train_loss": Weighted(sum(agg_w[u] * self.losses[u] for u in told), sum(agg_w[u] for u in told))}
            if told
            else {}
        )
        aggregate = Aggregate.from_mean(mean, sum(agg_w.values()), len(contributors), metrics)
        return SecureOutcome(aggregate, len(contributors), n, dict(self.survivors), len(result.left_out))


__all__ = ["DroppedFromRound", "SecureOutcome", "SecureRound", "SecureRoundAborted", "weight_of"]
