"""The asyncio half of the Coordinator and its protobuf translation.

:class:`ShellEvents` (mixed into :class:`hamrah.server.coordinator.Coordinator`) feeds the round
machine (``hamrah.server.machine``) and carries out what it decides: devices waiting for a draw get
their task or None, a due round is prepared, a secure round's protocol is started, a commit is
queued for the run loop, abandonments and the end of the run are logged. :func:`report_of` and
:func:`task_message` translate between the gRPC messages and the machine's typed values.
"""

from __future__ import annotations

import asyncio
import logging

from hamrah.server import events as ev
from hamrah.server.rounds import TaskInfo, device_scores
from hamrah.transport.codec import decode_metrics, decode_task_metrics
from hamrah.transport.plan import CROSS_SILO_KEY, Plan
from hamrah.transport.proto import fl_pb2 as pb

log = logging.getLogger("hamrah.server")
_STATUS = {pb.COMPLETED: ev.COMPLETED, pb.ABORTED: ev.ABORTED, pb.FAILED: ev.FAILED}


def report_of(header: pb.ReportHeader, payload: bytes) -> ev.Report:
    """Translate a ``ReportHeader`` and its payload into a :class:`hamrah.server.events.Report`.

    An unknown status is kept as its number (the Coordinator refuses it after checking the task).

    Raises:
        ProtocolError: a completed report whose metrics are not a JSON object of finite numbers.
    """
    status = _STATUS.get(header.status, str(header.status))
    metrics = decode_metrics(header.metrics) if status == ev.COMPLETED else {}
    task_metrics = decode_task_metrics(header.task_metrics) if status == ev.COMPLETED else {}
    return ev.Report(
        header.task_id, header.round, status, int(header.num_examples), metrics, payload, header.reason, task_metrics
    )


def task_message(info: TaskInfo, coord, checkpoint: bytes, checkpoint_sha: str) -> pb.Task:
    """Return the ``pb.Task`` a device gets for ``info``: the FL plan as JSON and the checkpoint's size
    and sha256 (``coord``: the Coordinator, for the plan's algorithm, model, seed and pipeline)."""
    train = info.kind == "train"
    extra: dict = {}
    if train:  # the pipeline's spec and state, and what every training plan carries (DP-SGD's ledger settings)
        extra = {**coord.plan_extra, **(coord.pipeline.plan_extra() if coord.pipeline is not None else {})}
    if coord.cfg.cross_silo:  # the site holds out a fixed share of its examples to score the global model on
        extra = {**extra, CROSS_SILO_KEY: {"eval_fraction": coord.cfg.site_eval_fraction}}
    plan = Plan(
        info.kind,
        info.round,
        coord.algorithm_plan,
        coord.model_spec,
        coord.run_plan.seed,
        coord.ignore_index,
        extra,
        coord.task_ref,
        coord.run_plan.rounds,
    )
    return pb.Task(
        task_id=info.task_id,
        round=info.round,
        kind=pb.TRAIN if train else pb.EVALUATE,
        plan=plan.to_json(),
        checkpoint_bytes=len(checkpoint),
        checkpoint_sha256=checkpoint_sha,
        report_deadline_s=coord.cfg.selection_timeout_s + coord.cfg.reporting_timeout_s,
    )


class ShellEvents:
    """Feeding the machine and carrying out its outputs (uses the Coordinator's ``machine``,
    ``current``, ``_prepare``, ``_task``, ``_run_secure``, ``on_round``)."""

    def _init_shell(self) -> None:
        self._waiting: dict[str, asyncio.Future] = {}  # devices waiting for the next draw
        self._upload_started: dict[str, float] = {}
        self._commit_due: ev.CommitDue | None = None
        self._wake: asyncio.Event | None = None
        self._opened = asyncio.Event()
        self._secure = None  # the round's SecureOutcome, once its protocol ended
        self._secure_job: asyncio.Future | None = None
        self._started = False
        self._round = None  # the RoundState last opened (its secure_ready outlives an abandonment)
        self.ended: ev.End | ev.RunFailed | None = None
        self.final_eval: dict | None = None  # cross-silo: the sites' example-weighted score of the final model

    def _start(self) -> None:
        self._started = True
        for out in self.machine.start(self.loop.ended):
            self._carry_out(out)

    def _feed(self, event: ev.Event) -> list[ev.Output]:
        """Hand ``event`` to the machine and carry out its outputs; return them.

        Raises:
            LateReport, ProtocolError: the machine refused a device event (nothing changed).
        """
        outs = self.machine.handle(event)
        for out in outs:
            self._carry_out(out)
        if self._wake is not None:
            self._wake.set()
        return outs

    def _carry_out(self, out: ev.Output) -> None:
        if isinstance(out, ev.RoundDue):
            self._feed(self._prepare(out))
        elif isinstance(out, ev.RoundOpened):
            self._round = self.current
            self._round.secure_ready = asyncio.Event()
            log.info(
                "round %d%s: %s %d devices (goal %d)",
                out.round,
                f" (attempt {out.attempt})" if out.attempt > 1 else "",
                "asking the sites to score the final model:" if self.machine.evaluating else "selecting",
                out.target,
                out.goal,
            )
            self._opened.set()
        elif isinstance(out, ev.SitesEvaluated):
            self._sites_evaluated(out)
        elif isinstance(out, ev.TaskAssigned):
            self._resolve(out.device, self._task(self.current.tasks[out.task_id]))
        elif isinstance(out, ev.NotDrawn):
            self._resolve(out.device, None)
        elif isinstance(out, ev.SelectionClosed):
            self._opened = asyncio.Event()
        elif isinstance(out, ev.ReportingOpened) and out.secure:
            self._secure_job = asyncio.ensure_future(self._run_secure(self.current))
        elif isinstance(out, ev.CommitDue):
            self._commit_due = out
        elif isinstance(out, ev.SiteOut):
            log.warning(
                "device %s failed its task and is out of the run (%d sites remain): %s",
                self.who(out.device),
                out.left,
                out.reason,
            )
        elif isinstance(out, ev.SiteBack):
            log.warning(
                "device %s checked in from a restarted process and rejoins the run (%d sites in it)",
                self.who(out.device),
                out.left,
            )
        elif isinstance(out, ev.RoundAbandoned):
            log.warning("round %d: %s", out.round, out.message)
            if self._round is not None and self._round.secure_ready is not None:
                self._round.secure_ready.set()  # secure exchanges waiting for this round learn it is gone
        elif isinstance(out, (ev.End, ev.RunFailed)):
            self.ended = out
            if isinstance(out, ev.End) and out.message:
                log.info("%s: stopping", out.message)
            for device in list(self._waiting):
                self._resolve(device, None)
            self._opened.set()

    def _sites_evaluated(self, out: ev.SitesEvaluated) -> None:
        """Keep and log the sites' example-weighted score of the final model."""
        n = sum(k for k, _ in out.evals)
        if not n:
            log.warning("round %d: no site scored the final model", out.round)
            return
        scored = device_scores(out.evals)
        self.final_eval = {
            "final_device_accuracy": scored.pop("accuracy", None),
            "final_device_loss": scored.pop("loss", None),
            "final_eval_sites": len(out.evals),
            "final_eval_examples": n,
            **{f"final_device_{k}": v for k, v in scored.items()},  # a user task's metrics, e.g. final_device_auc
        }
        log.info(
            "round %d: final model: on-device %s (%d sites, %d held-out examples)",
            out.round,
            ", ".join(
                f"{k[13:]} {v:.4f}"
                for k, v in self.final_eval.items()
                if k[13:] and v is not None and k.startswith("final_device_")
            ),
            len(out.evals),
            n,
        )

    def _resolve(self, device: str, value) -> None:
        fut = self._waiting.get(device)
        if fut is not None and not fut.done():
            fut.set_result(value)

    def committed(self, event: ev.Event) -> None:
        """Feed the outcome of :meth:`_commit_step`; log the round and call ``on_round`` if committed."""
        rs = self.current
        self._feed(event)
        if not isinstance(event, ev.Committed):
            return
        rec, p = event.record, event.record.phases
        dev = rec.device_eval.device_accuracy if rec.device_eval is not None else None
        own, glob = rec.extra.get("device_personal_accuracy"), rec.extra.get("device_local_accuracy")
        log.info(
            "round %d: selected %d (goal %d), reported %d, dropped %d%s, %s%s%s%.1f s",
            rec.round,
            rec.selected,
            rs.goal,
            rec.clients,
            rec.dropped,
            f", refused {rec.refused}" if rec.refused else "",
            f"accuracy {rec.test_accuracy:.4f}, " if rec.test_accuracy is not None else "",
            f"on-device accuracy {dev:.4f} ({rec.device_eval.eval_reported} devices), " if dev is not None else "",
            f"personal {own:.4f} (global {glob:.4f}) on devices' held-out examples, " if own is not None else "",
            p.round_s,
        )
        if self.on_round is not None:
            self.on_round(rec)

    def upload_ended(self, task_id: str) -> None:
        """A report stream admitted for ``task_id`` ended, taken or not: the task may be reported again."""
        self._upload_started.pop(task_id, None)

    # --- called by selectors -----------------------------------------------------------------

    async def wait_for_selection(self, timeout: float) -> None:
        """Return when a round opens selection, or after ``timeout`` seconds."""
        await asyncio.sleep(0)
        try:
            await asyncio.wait_for(self._opened.wait(), timeout)
        except asyncio.TimeoutError:
            pass

    async def request(self, device: str) -> pb.Task | None:
        """Put ``device`` in the open round's next draw; return its task (train or evaluate) if drawn.

        Check-ins that arrive within ``selection_window_s`` of the first one are drawn from uniformly at
        random with the seeded rng (:func:`hamrah.server.rounds.draw`), so arriving first buys nothing.
        None: no round is selecting, the device already has a task or sits out after a no-show, or
        it was not drawn.
        """
        if device in self._waiting:
            return None
        fut = self._waiting[device] = asyncio.get_running_loop().create_future()
        try:
            self._feed(ev.CheckedIn(device))
            return await fut
        finally:
            self._waiting.pop(device, None)


__all__ = ["ShellEvents", "report_of", "task_message"]
