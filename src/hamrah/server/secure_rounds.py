"""The Coordinator's secure-aggregation part: a round whose pipeline ends in SecAgg/SecAgg+ runs the
protocol over one stream per training device (``hamrah.server.secure``); the Coordinator only
receives the sum's mean."""

from __future__ import annotations

import logging

from hamrah.core.errors import ConfigError, ProtocolError
from hamrah.pipeline.distributed import DistributedDiscreteGaussian
from hamrah.secagg.params import wire_layout
from hamrah.secagg.stage import SecureAggregation
from hamrah.server.rounds import LateReport, RoundState
from hamrah.server.secure import SecureOutcome, SecureRound
from hamrah.transport.proto import fl_pb2 as pb

log = logging.getLogger("hamrah.server")


class SecureRounds:
    """Mixed into :class:`hamrah.server.coordinator.Coordinator` (uses its ``current``, ``cfg``,
    ``pipeline`` and ``_live_task``; ``device_identity``, set by :class:`hamrah.server.app.FLServer`, maps a
    device key to its registered Ed25519 key for ``malicious_server`` rounds)."""

    async def secure_exchange(
        self, device: str, header: pb.SecAggHeader, message: bytes
    ) -> tuple[pb.SecAggHeader, bytes]:
        """Take one device's secure-aggregation message; return its next one when the stage closes.

        Raises:
            ProtocolError: not a live training task of this device, a round without secure aggregation,
                or a message the protocol refuses (see :meth:`SecureRound.exchange`).
        """
        info = self._live_task(header.task_id, device)
        rs = self.current
        if header.round != rs.round:
            raise ProtocolError(f"secure aggregation message for round {header.round}, the task is in round {rs.round}")
        if info.kind != "train" or self.secure_stage() is None:
            raise ProtocolError("this task does not take part in secure aggregation")
        await rs.secure_ready.wait()
        if rs.secure is None or rs is not self.current:
            raise LateReport(f"round {rs.round} was abandoned")
        claimed = header.num_examples if header.stage == pb.JOIN else 0
        out = await rs.secure.exchange(info.task_id, header, message)
        if claimed > rs.secure.max_weight:  # joined: counted as max_weight (as a plain report would be)
            rs.capped += 1
            log.warning(
                "round %d: secure aggregation: device %s claimed num_examples = %d, counted as %d "
                "(the influence bound's weight cap, server.max_example_weight)",
                rs.round,
                self.who(device),
                claimed,
                rs.secure.max_weight,
            )
        return out

    def secure_leave(self, task_id: str, device: str) -> None:
        """A device hung up mid-protocol: stop waiting for it (it is a drop-out from the next stage on)."""
        rs = self.current
        info = rs.tasks.get(task_id) if rs is not None else None
        if info is not None and info.device == device and rs.secure is not None:
            rs.secure.leave(task_id)

    def secure_stage(self) -> SecureAggregation | DistributedDiscreteGaussian | None:
        """Return the pipeline's secure-aggregation stage, or None."""
        if self.pipeline is None:
            return None
        chain = self.pipeline.run.chain
        stage = None if chain.secure_sum is None else chain.stages[chain.secure_sum]
        return stage if isinstance(stage, (SecureAggregation, DistributedDiscreteGaussian)) else None

    async def _secure_round(self, rs: RoundState) -> SecureOutcome | None:
        """Run the round's secure aggregation over its training devices; None if it was aborted."""
        tasks = [t.task_id for t in rs.tasks.values() if t.kind == "train"]
        lookup = getattr(self, "device_identity", None)  # device key -> registered Ed25519 key (set by the app)
        identity_key = None if lookup is None else (lambda task_id: lookup(rs.tasks[task_id].device))
        try:
            rs.secure = SecureRound(
                self.secure_stage(),
                wire_layout(self.pipeline.wire),
                tasks,
                rs.round,
                self.pipeline.spec.equal_weights,
                self.cfg.secagg_stage_timeout_s,
                identity_key,
                self.weight_cap(),
            )
        except ConfigError as err:  # e.g. fewer than 2 devices
            log.warning("round %d: secure aggregation cannot start: %s", rs.round, err)
            return None
        finally:
            rs.secure_ready.set()
        outcome = await rs.secure.run(rs.reporting_deadline)
        for task_id, what in rs.secure.share_liars().items():
            log.warning(
                "round %d: secure aggregation: device %s sent %s at unmasking; all its shares were left out "
                "and the secrets rebuilt from the other holders'",
                rs.round,
                self.who(rs.tasks[task_id].device),
                what,
            )
        self._log_rejections(rs)
        return outcome

    def _log_rejections(self, rs: RoundState) -> None:
        """Name who could not open whose shares at masked_input, and who was left out of the sum for it."""
        accused, left_out = rs.secure.rejections()

        def name(task_id: str) -> str:
            return self.who(rs.tasks[task_id].device)

        for task_id, senders in accused.items():
            log.warning(
                "round %d: secure aggregation: device %s could not open the shares sent by %s (rejected them "
                "at masked_input)",
                rs.round,
                name(task_id),
                ", ".join(name(t) for t in senders),
            )
        if left_out:
            counts = {t: sum(t in senders for senders in accused.values()) for t in left_out}
            log.warning(
                "round %d: secure aggregation: left out of the sum for rejected shares: %s; a device accused by "
                "several others is the likely liar (its shares did not open), the round goes on without it",
                rs.round,
                ", ".join(f"{name(t)} (accused by {counts[t]})" for t in left_out),
            )


def refuse_malicious_server_without_keys(pipeline, tokens) -> None:
    """Refuse, before the server starts, ``malicious_server`` without provisioned device identity keys.

    Raises:
        ConfigError: no ``server.tokens_file``, or a registry with devices that have no Ed25519 key (a plain
            tokens file), naming why: the actively secure protocol's signatures need them.
    """
    if pipeline is None:
        return
    chain = pipeline.run.chain
    stage = None if chain.secure_sum is None else chain.stages[chain.secure_sum]
    if not getattr(stage, "malicious_server", False):
        return
    why = (
        "devices sign their keys and the contributor set with their provisioned Ed25519 identity keys, "
        "which devices check against the CA's identity certificates"
    )
    if tokens is None:
        raise ConfigError(
            f"secure_aggregation.malicious_server = true needs server.tokens_file = a device registry "
            f"from `hamrah provision` ({why}); the server has none"
        )
    missing = tokens.unsigned_devices()
    if missing:
        raise ConfigError(
            f"secure_aggregation.malicious_server = true: devices {', '.join(missing[:5])}"
            f"{' ...' if len(missing) > 5 else ''} have no identity key in server.tokens_file ({why}); "
            "expected a registry from `hamrah provision`, not a plain tokens file"
        )


__all__ = ["SecureRounds", "refuse_malicious_server_without_keys"]
