"""The Coordinator: one population's rounds over gRPC (Bonawitz et al. 2019, section 4.2).

It is a thin asyncio shell around :class:`hamrah.server.machine.RoundMachine`, which decides
selection, reporting, abandonment and retries from typed events and an injected clock. The shell
translates the gRPC service's messages (``pb.ReportHeader``, ``pb.Task``) to and from the typed
values of :mod:`hamrah.server.events`, keeps the timers, folds reports into the Aggregators with
bounded influence (``hamrah.server.reports``), runs secure aggregation (``secure_rounds``), and
commits rounds (:mod:`hamrah.server.commit`, in a worker thread). Everything but waiting is sync, so
a test or a replay drives the same object with a fake clock and no sockets
(``tests/system/test_recorded_run.py``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import torch

from hamrah.aggregation import build_aggregator
from hamrah.algorithms.base import Algorithm
from hamrah.algorithms.state import unflatten_state
from hamrah.core.errors import NotEnoughClients, ProtocolError
from hamrah.core.params import Params, model_state, seeded
from hamrah.core.records import RoundRecord
from hamrah.data.federated import ArrayData
from hamrah.loop import RoundLoop, RunPlan
from hamrah.models import ModelSpec
from hamrah.server import events as ev
from hamrah.server.aggregators import master_aggregator
from hamrah.server.commit import CommitStep
from hamrah.server.config import ServerConfig
from hamrah.server.influence import check_metrics, influence_bound, site_eval_of
from hamrah.server.machine import DUE, MachineConfig, RoundMachine
from hamrah.server.names import DeviceNames
from hamrah.server.reports import BoundedReports
from hamrah.server.rounds import MAX_EXAMPLES, LateReport, RoundState, TaskInfo, in_model_order
from hamrah.server.secure_rounds import SecureRounds
from hamrah.server.shell import ShellEvents, report_of, task_message
from hamrah.server.sites import out_if_refused
from hamrah.server.state import ServerStore
from hamrah.task import Task
from hamrah.transport.codec import BROADCAST_PREFIX, encode_params, sha256, spec_of
from hamrah.transport.plan import DP_EPSILON, PERSONAL_METRICS, TaskRef
from hamrah.transport.proto import fl_pb2 as pb

log = logging.getLogger("hamrah.server")
_LOGGED = ("train_loss", "loss", "accuracy", "eval_accuracy")  # metrics named in a report's log line
__all__ = ["Coordinator", "LateReport"]


class Coordinator(ShellEvents, SecureRounds, BoundedReports, CommitStep):
    """Drives rounds of ``algorithm`` for one population; see the module docstring.

    ``clock`` (default: the monotonic clock) is what the round machine reads; ``journal=True`` keeps
    every event with its time and the machine's outputs (``machine.journal``), to replay a run.
    """

    def __init__(
        self,
        cfg: ServerConfig,
        run: RunPlan,
        algorithm: Algorithm,
        algorithm_plan: dict,
        model: ModelSpec | None,
        test_data: ArrayData | None,
        store: ServerStore,
        goal: int,
        ignore_index: int | None = None,
        pipeline=None,
        clock: ev.Clock | None = None,
        journal: bool = False,
        new_task_id: Callable[[], str] | None = None,
        task: Task | None = None,
        task_ref: TaskRef | None = None,
    ):
        self.pipeline = pipeline  # hamrah.server.pipeline.ServerPipeline, or None
        self.cfg, self.run_plan, self.algorithm, self.algorithm_plan = cfg, run, algorithm, algorithm_plan
        self.model_spec, self.test_data, self.store, self.ignore_index = model, test_data, store, ignore_index
        self.goal = goal
        self.task, self.task_ref = task, task_ref  # the model is the built-in ``model``'s, else the task's
        if model is None and task is None:
            raise ValueError("Coordinator: expected a built-in ModelSpec or a task")
        self.model = self._build_model()
        self.aggregator = build_aggregator(**cfg.aggregator) if cfg.aggregator is not None else None
        self.master = master_aggregator(cfg.aggregators, cfg.backend)
        self.clock = clock or ev.MonotonicClock()
        self.started = self.clock.now()
        self.refused_aggregates = 0
        self.example_epsilon: float | None = None  # DP-SGD: the largest epsilon a device has reported spending
        self.totals = None  # a callable returning the run's counters, saved with each commit (FLServer sets it)
        self.plan_extra: dict = {}  # what every training plan's extra carries besides the pipeline's
        self.on_round: Callable[[RoundRecord], None] | None = None  # called after each commit
        self.elapsed_before = 0.0  # elapsed_s of the last committed round of earlier processes
        self.devices = DeviceNames()
        self.site_log = logging.INFO if cfg.cross_silo else logging.DEBUG  # per-device lines
        resumed = store.latest()
        if resumed is None:
            params = self._initial_params()
            state = algorithm.init_server_state(params)
            last_round = 0
        else:
            last_round, saved, tensors, scalars = resumed
            params = in_model_order(saved, self.model, store.dir)
            state = unflatten_state(type(algorithm.init_server_state(params)), tensors, scalars)
            last = store.committed_rounds()[-1]
            self.elapsed_before = float(last.get("elapsed_s", 0.0))
            if last.get("privacy_unit") == "example":
                self.example_epsilon = last.get("epsilon")
            log.info("resuming from committed round %d (state %s)", last_round, store.dir)
        self.loop = RoundLoop(algorithm, run, params, state, last_round, self)  # shared with the simulator
        self.machine = RoundMachine(MachineConfig.of(cfg, goal), self.clock, run.seed, last_round, new_task_id, journal)
        self.max_weight, self.clip = influence_bound(cfg, store.committed_rounds()[-1:] if resumed else [])
        self.spec = spec_of(self.params)
        self.update_limit = int(cfg.max_update_mb * 2**20) or 2 * len(encode_params(self.params)) + 2**20
        self._init_shell()

    def _build_model(self) -> torch.nn.Module:
        return self.model_spec.build() if self.model_spec is not None else self.task.model()  # type: ignore[union-attr]

    @property
    def task_name(self) -> str:
        """The task's name (a built-in: its model's name)."""
        if self.task_ref is not None:
            return self.task_ref.name
        return self.task.task_name if self.task is not None else self.model_spec.name  # type: ignore[union-attr]

    def _initial_params(self) -> Params:
        """The seeded initial model, drawn as the simulator draws it (parameters and BatchNorm buffers)."""
        return model_state(seeded(self._build_model, self.run_plan.seed))

    def refusal(self, round_idx: int) -> str | None:
        """The loop's budget: why round ``round_idx`` may not start (the pipeline's privacy budget), or
        None. Asked through the Coordinator, as FLServer attaches the pipeline after building it."""
        return self.pipeline.refusal(round_idx) if self.pipeline is not None else None

    @property
    def params(self) -> Params:
        """The global model of the last committed round (the loop's)."""
        return self.loop.params

    @property
    def server_state(self) -> object:
        """The algorithm's server state of the last committed round (the loop's)."""
        return self.loop.state

    # --- the machine's state, read by selectors, the service and tests -----------------------

    @property
    def current(self) -> RoundState | None:
        return self.machine.current

    @property
    def last_round(self) -> int:
        return self.machine.last_round

    @property
    def no_show(self) -> dict[str, int]:
        return self.machine.no_show

    @property
    def draining(self) -> bool:
        return self.machine.draining

    @property
    def finished(self) -> bool:
        """Training is over (devices are told to stop); False while running and after a drain."""
        return self.machine.finished and not (isinstance(self.ended, ev.End) and self.ended.reason == "drained")

    def has_task(self, device: str) -> bool:
        return self.machine.has_task(device)

    def named(self, device: str, name: str, session: str = "") -> None:
        """Note ``device``'s check-in name and session. Cross-silo: a site taken out of the run that checks
        in from a new session (its process restarted, its store perhaps fixed) rejoins the run."""
        if self.devices.checked_in(device, name, session) and device in self.machine.out:
            self._feed(ev.SiteRejoined(device))

    def who(self, device: str) -> str:
        return self.devices.who(device)

    def site_out(self, device: str) -> str | None:
        """Cross-silo: why ``device`` is out of the run, or None while it is in."""
        return self.machine.out.get(device)

    def site_failed(self, device: str, reason: str) -> None:
        """Cross-silo: ``device`` cannot run the task (seen at check-in): it is out of the run."""
        self._feed(ev.SiteFailed(device, reason))

    def reconnect_after(self) -> float:
        return self.machine.reconnect_after()

    def drain(self) -> None:
        """Start no new round (SIGTERM): :meth:`run` returns after the round in flight."""
        self._feed(ev.Stop("SIGTERM", drained=True))

    # --- called by the gRPC service ------------------------------------------------------------

    def checkpoint(self, task_id: str, device: str) -> bytes:
        """Return the checkpoint bytes of a live task of ``device`` (call :meth:`downloaded` after)."""
        self._feed(ev.TaskAsked(device, task_id))
        return self._ckpt

    def downloaded(self, task_id: str, device: str) -> None:
        """Note that a task's checkpoint was sent to its last byte (the download phase's end)."""
        try:
            self._feed(ev.Downloaded(device, task_id))
        except ProtocolError:  # the round moved on while the last chunk went out: nothing to time
            return
        info = self.current.tasks[task_id]
        self.current.moved(_where(info), down=len(self._ckpt))

    def _live_task(self, task_id: str, device: str) -> TaskInfo:
        return self.machine.live_task(task_id, device)

    def admit(self, device: str, header: pb.ReportHeader) -> TaskInfo:
        """Check a report's header before its payload is read (the upload slot is taken only after this).

        Raises:
            LateReport: the task's round has closed or moved on.
            ProtocolError: unknown task, a task of another device, another round, a second report, or a
                report while one for the task is being received (the service calls :meth:`upload_ended`).
        """
        info = self.machine.admit(device, header.task_id, header.round)
        if header.task_id in self._upload_started:  # a second stream would take a second upload slot
            raise ProtocolError(f"report already being received: task {header.task_id[:12]!r}, one stream at a time")
        self._upload_started[header.task_id] = self.clock.now()
        return info

    def report(self, device: str, header: pb.ReportHeader, payload: bytes) -> str:
        """Translate one report to a :class:`hamrah.server.events.Report` and :meth:`accept` it."""
        return self.accept(device, report_of(header, payload))

    def accept(self, device: str, report: ev.Report) -> str:
        """Accept one device's report into its Aggregator; return a short acknowledgement.

        The report's weight is ``num_examples`` capped at the influence bound, its delta is scaled to
        the norm bound, and its metrics are range-checked (``hamrah.server.influence``).

        Raises:
            LateReport: the round no longer accepts reports.
            ProtocolError: unknown task, a task of another device, a second report, an unknown status,
                an update that does not match the model (names, shapes, dtypes, finite values, sizes),
                or metrics out of range.
        """
        info = self.machine.admit(device, report.task_id, report.round)
        rs = self.current
        started = self._upload_started.pop(report.task_id, None)
        if report.status in (ev.ABORTED, ev.FAILED):
            if rs.secure is not None:
                rs.secure.leave(info.task_id)
            log.log(
                logging.WARNING if report.status == ev.FAILED else logging.INFO,
                "round %d: device %s %s its task: %s",
                rs.round,
                self.who(device),
                report.status,
                report.reason[:300],
            )
            reason = report.reason[:300]  # kept (cross-silo: the site's out reason) and sent back at check-in
            self._feed(ev.DeviceAborted(device, info.task_id, rs.round, report.status == ev.FAILED, reason))
            return report.status
        with out_if_refused(self._feed, self.cfg.cross_silo, device, info, rs):  # a site that does not fit
            if report.status != ev.COMPLETED:
                raise ProtocolError(f"report status {report.status}: expected COMPLETED, ABORTED or FAILED")
            if not 1 <= report.num_examples <= MAX_EXAMPLES:
                raise ProtocolError(f"num_examples = {report.num_examples}: expected 1..{MAX_EXAMPLES}")
            t0 = self.clock.now()
            if info.kind == "evaluate":
                if report.payload:
                    raise ProtocolError("an evaluate report carries metrics loss and accuracy and no update")
                metrics = check_metrics(
                    report.metrics,
                    required=("loss",) if self._user_task else ("loss", "accuracy"),
                )
                if report.task_metrics:
                    metrics["task"] = dict(report.task_metrics)
                rs.evals.append((self._weight(rs, report.num_examples), metrics))
            elif self.secure_stage() is not None:
                raise ProtocolError(
                    "this round uses secure aggregation: a training update goes through the "
                    "SecureAggregation stream, not Report"
                )
            else:
                site_eval = (
                    site_eval_of(report.metrics, report.task_metrics, self._user_task, self.max_weight)
                    if self.cfg.cross_silo
                    else None
                )
                decoded = self._decode_report(info, report)  # metrics range-checked here
        if info.kind != "evaluate":
            self._fold(rs, info, *decoded)
            if DP_EPSILON in report.metrics:
                self.example_epsilon = max(self.example_epsilon or 0.0, report.metrics[DP_EPSILON])
            if "held_examples" in report.metrics:  # range-checked with the rest in _fold
                rs.personal.append({k: report.metrics[k] for k in PERSONAL_METRICS if k in report.metrics})
            rs.moved(_where(info), up=len(report.payload))
            rs.aggregation_s += self.clock.now() - t0
            if site_eval is not None:
                rs.evals.append(site_eval)
        log.log(
            self.site_log,
            "round %d: device %s reported its %s task: %d examples, %d bytes, %s",
            rs.round,
            self.who(device),
            info.kind,
            report.num_examples,
            len(report.payload),
            ", ".join(f"{k} {report.metrics[k]:.4g}" for k in _LOGGED if k in report.metrics),
        )
        train_s = report.metrics.get("duration_s") if info.kind == "train" else None
        self._feed(
            ev.ReportArrived(
                device,
                info.task_id,
                rs.round,
                self._reports(rs),
                train_s,
                None if started is None else t0 - started,
                report if self.machine.journal is not None else None,
            )
        )
        return "accepted"

    @property
    def _user_task(self) -> bool:
        """A user's task (it may score no accuracy: a regression)."""
        return self.task_ref is not None and not self.task_ref.builtin

    def refused(self, device: str, reason: str) -> None:
        """Count a refused message of ``device`` in the round in flight."""
        self._feed(ev.ReportRefused(device, reason))

    # --- the round loop ------------------------------------------------------------------------

    async def run(self) -> None:
        """Run rounds until ``run.rounds`` are committed (or the target is reached, if asked).

        Raises:
            NotEnoughClients: a round was abandoned ``server.max_round_attempts`` times.
        """
        self._wake = asyncio.Event()
        if self.machine.phase == DUE and self.ended is None and not self._started:
            self._start()
        while not self.machine.finished:
            if self._commit_due is not None:
                due, self._commit_due = self._commit_due, None
                self.committed(await asyncio.to_thread(self._commit_step, due))
                continue
            deadline = self.machine.next_timer()
            self._wake.clear()
            left = None if deadline is None else deadline - self.clock.now()
            if left is None or left > 0:
                try:
                    await asyncio.wait_for(self._wake.wait(), left)
                    continue
                except asyncio.TimeoutError:
                    pass
            self._feed(ev.TimerFired())
        self._opened.set()
        if isinstance(self.ended, ev.RunFailed):
            raise NotEnoughClients(self.ended.message)

    def _prepare(self, due: ev.RoundDue) -> ev.Event:
        """Get round ``due.round`` ready (checkpoint, Aggregators); return the event that opens it."""
        evaluating = self.machine.evaluating  # cross-silo: the sites score the final model, no update
        if not evaluating:
            if self.loop.due() is None:  # the privacy budget (the machine knows the rounds)
                end = self.loop.ended
                log.warning("round %d not started: %s", due.round, end.message if end else "the run is over")
                return ev.Stop("the privacy budget allows no more rounds")
            if self.pipeline is not None:
                self.pipeline.start_round(due.round)
        tensors = dict(self.params)
        extra = self.loop.broadcast()
        if extra:
            tensors.update({BROADCAST_PREFIX + k: v for k, v in extra.items()})
        self._ckpt = encode_params(tensors)
        self._ckpt_sha = sha256(self._ckpt)
        buffered = self.aggregator is not None  # a robust rule needs each report; every algorithm streams
        self.master.start_round(buffered=buffered or (self.pipeline is not None and self.pipeline.buffered))
        self._secure = None
        return ev.OpenRound(secure=not evaluating and self.secure_stage() is not None)

    def _task(self, info: TaskInfo) -> pb.Task:
        info.aggregator = self.master.assign() if info.kind == "train" else -1
        return task_message(info, self, self._ckpt, self._ckpt_sha)

    async def _run_secure(self, rs: RoundState) -> None:
        self._secure = await self._secure_round(rs)
        if rs is self.current:
            self._feed(ev.SecureDone(self._secure.contributors if self._secure is not None else None))


def _where(info: TaskInfo) -> str:
    """The traffic key of a task: its Aggregator's index, or "evaluate"."""
    return "evaluate" if info.kind == "evaluate" else str(info.aggregator)
