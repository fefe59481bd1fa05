"""The Coordinator: drives one population's rounds and owns the global model and round state
(Bonawitz et al. 2019, section 4.2).

A round is Selection (devices checking in are given tasks until ``ceil(goal * over_selection)``
are selected or the selection timeout passes), Configuration (each selected device gets the plan
at once and downloads the checkpoint), and Reporting (updates are accepted until ``goal`` have
arrived, every selected device has answered, or the reporting timeout passes; later reports are
refused as stale). Too few selected devices or reports abandon the round, which is retried up to
``max_round_attempts`` times. Check-ins are drawn from at random (seeded), not first-come. Each
report's influence is bounded (``hamrah.server.influence``); a round whose new model is not finite is
refused and repeated. A committed round is durable before the next one starts.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
import uuid

import torch

from hamrah.aggregation import build_aggregator
from hamrah.algorithms.base import Algorithm
from hamrah.algorithms.local import evaluate
from hamrah.algorithms.state import flatten_state, unflatten_state
from hamrah.core.errors import NotEnoughClients, ProtocolError
from hamrah.core.params import Params
from hamrah.data.federated import ArrayData
from hamrah.models import ModelSpec
from hamrah.server.aggregators import master_aggregator
from hamrah.server.config import ServerConfig
from hamrah.server.influence import (
    check_finite,
    check_metrics,
    influence_bound,
)
from hamrah.server.reports import BoundedReports
from hamrah.server.rounds import (
    MAX_EXAMPLES,
    LateReport,
    RoundState,
    RunPlan,
    TaskInfo,
    in_model_order,
    no_shows,
    round_record,
)
from hamrah.server.rounds import draw as draw_devices
from hamrah.server.secure import SecureOutcome
from hamrah.server.secure_rounds import SecureRounds
from hamrah.server.state import ServerStore
from hamrah.transport.codec import (
    BROADCAST_PREFIX,
    decode_metrics,
    encode_params,
    sha256,
    spec_of,
)
from hamrah.transport.plan import Plan
from hamrah.transport.proto import fl_pb2 as pb

log = logging.getLogger("hamrah.server")

class Coordinator(SecureRounds, BoundedReports):
    """Drives rounds of ``algorithm`` for one population; see the module docstring."""

    def __init__(self, cfg: ServerConfig, run: RunPlan, algorithm: Algorithm, algorithm_plan: dict,
                 model: ModelSpec, test_data: ArrayData | None, store: ServerStore, goal: int,
                 ignore_index: int | None = None, pipeline=None):
        self.pipeline = pipeline  # hamrah.server.pipeline.ServerPipeline, or None
        self.cfg, self.run_plan, self.algorithm, self.algorithm_plan = cfg, run, algorithm, algorithm_plan
        self.model_spec, self.test_data, self.store, self.ignore_index = model, test_data, store, ignore_index
        self.goal = goal
        self.model = model.build()
        self.aggregator = build_aggregator(**cfg.aggregator) if cfg.aggregator is not None else None
        self.master = master_aggregator(cfg.aggregators, cfg.backend)
        self.rng = random.Random(run.seed)
        self.current: RoundState | None = None
        self.finished = False
        self._opened = asyncio.Event()
        self.started = time.monotonic()
        self.round_s = cfg.reconnect_min_s  # moving average of committed rounds' durations
        self.refused_aggregates = 0
        self.draining = False
        self.totals = None  # a callable returning the run's counters, saved with each commit (FLServer sets it)
        self.elapsed_before = 0.0  # elapsed_s of the last committed round of earlier processes
        self.no_show: dict[str, int] = {}  # device -> last round it sits out (held a task, never answered)
        resumed = store.latest()
        if resumed is None:
            self.params: Params = self._initial_params()
            self.server_state = algorithm.init_server_state(self.params)
            self.last_round = 0
        else:
            self.last_round, saved, tensors, scalars = resumed
            self.params = in_model_order(saved, self.model, store.dir)
            template = algorithm.init_server_state(self.params)
            self.server_state = unflatten_state(type(template), tensors, scalars)
            self.elapsed_before = float(store.committed_rounds()[-1].get("elapsed_s", 0.0))
            log.info("resuming from committed round %d (state %s)", self.last_round, store.dir)
        self.max_weight, self.clip = influence_bound(cfg, store.committed_rounds()[-1:] if resumed else [])
        self.spec = spec_of(self.params)
        self.update_limit = int(cfg.max_update_mb * 2**20) or 2 * len(encode_params(self.params)) + 2**20

    def _initial_params(self) -> Params:
        """The seeded initial model."""
        from hamrah.core.seeds import init_seed

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(init_seed(self.run_plan.seed))
            return {k: v.detach().clone() for k, v in self.model_spec.build().named_parameters()}

    # --- called by selectors -----------------------------------------------------------------

    async def wait_for_selection(self, timeout: float) -> None:
        """Return when a round opens selection, or after ``timeout`` seconds."""
        await asyncio.sleep(0)
        try:
            await asyncio.wait_for(self._opened.wait(), timeout)
        except asyncio.TimeoutError:
            pass

    def has_task(self, device: str) -> bool:
        rs = self.current
        return rs is not None and any(t.device == device for t in rs.tasks.values())

    async def request(self, device: str, window_s: float | None = None) -> pb.Task | None:
        """Put ``device`` in the open round's next draw; return its task (train or evaluate) if drawn.

        Check-ins that arrive within ``window_s`` (default ``selection_window_s``) of the first one are
        drawn from uniformly at random with the seeded rng (:func:`hamrah.server.rounds.draw`), so
        arriving first buys nothing. None: no round is selecting, the device already has a task or sits
        out after a no-show, or it was not drawn.
        """
        rs = self.current
        if (rs is None or not rs.selection_open or self.has_task(device) or device in rs.candidates
                or self.no_show.get(device, 0) >= rs.round):
            return None
        loop = asyncio.get_running_loop()
        fut = rs.candidates[device] = loop.create_future()
        if rs.draw is None:
            rs.draw = loop.call_later(self.cfg.selection_window_s if window_s is None else window_s, self._draw, rs)
        try:
            return await fut
        finally:
            rs.candidates.pop(device, None)

    def _draw(self, rs: RoundState) -> None:
        rs.draw = None
        waiting = {d: f for d, f in rs.candidates.items() if not f.done()}
        chosen = draw_devices(list(waiting), rs.slots() if rs.selection_open and rs is self.current else 0, self.rng)
        for device in sorted(waiting):
            waiting[device].set_result(self._assign(rs, device) if device in chosen else None)

    def _assign(self, rs: RoundState, device: str) -> pb.Task:
        """Give ``device`` a slot of ``rs``: a task of the kind still needed."""
        trains, evals = rs.picked("train"), rs.picked("evaluate")
        share = rs.eval_target / (rs.target + rs.eval_target)
        kind = "evaluate" if evals < rs.eval_target and (trains >= rs.target or self.rng.random() < share) else "train"
        info = TaskInfo(uuid.uuid4().hex, device, rs.round, self.master.assign() if kind == "train" else -1, kind)
        rs.tasks[info.task_id] = info
        if rs.slots() <= 0:
            self._close_selection(rs)
        plan = Plan(kind, rs.round, self.algorithm_plan, self.model_spec, self.run_plan.seed, self.ignore_index,
                    self.pipeline.plan_extra() if self.pipeline is not None and kind == "train" else {})
        return pb.Task(task_id=info.task_id, round=rs.round, kind=pb.TRAIN if kind == "train" else pb.EVALUATE,
                       plan=plan.to_json(), checkpoint_bytes=len(self._ckpt), checkpoint_sha256=self._ckpt_sha,
                       report_deadline_s=self.cfg.selection_timeout_s + self.cfg.reporting_timeout_s)

    def _close_selection(self, rs: RoundState) -> None:
        rs.selection_open = False
        self._opened = asyncio.Event()
        rs.selected.set()

    def reconnect_after(self) -> float:
        """Pace steering: when a turned-away device should come back: about when the next round's
        selection opens (estimated from recent round durations), spread out so devices do not return
        all at once, within [reconnect_min_s, reconnect_max_s]."""
        rs = self.current
        elapsed = time.monotonic() - rs.started if rs is not None else 0.0
        wait = max(self.round_s - elapsed, 0.0) + self.rng.uniform(0.0, 0.5 * self.round_s)
        return min(max(wait, self.cfg.reconnect_min_s), self.cfg.reconnect_max_s)

    # --- called by the gRPC service ------------------------------------------------------------

    def checkpoint(self, task_id: str, device: str) -> bytes:
        """Return the checkpoint bytes of a live task of ``device``."""
        self._live_task(task_id, device)
        return self._ckpt

    def _live_task(self, task_id: str, device: str) -> TaskInfo:
        rs = self.current
        info = rs.tasks.get(task_id) if rs is not None else None
        if info is None:
            raise LateReport(f"task {task_id[:12]!r} is not a task of the current round (late or unknown)")
        if info.device != device:
            raise ProtocolError(f"task {task_id[:12]!r} belongs to another device")
        return info

    def admit(self, device: str, header: pb.ReportHeader) -> TaskInfo:
        """Check a report's header before its payload is read (the upload slot is taken only after this).

        Raises:
            LateReport: the task's round has closed or moved on.
            ProtocolError: unknown task, a task of another device, another round, or a second report.
        """
        info = self._live_task(header.task_id, device)
        rs = self.current
        if header.round != rs.round:
            raise ProtocolError(f"report for round {header.round}, the task is in round {rs.round}")
        if not rs.reporting_open and not rs.selection_open or (info.kind == "train" and self._reports(rs) >= rs.goal):
            raise LateReport(f"round {rs.round} no longer accepts reports")
        if info.status != "selected":
            raise ProtocolError(f"task {header.task_id[:12]!r} already {info.status}")
        return info

    def report(self, device: str, header: pb.ReportHeader, payload: bytes) -> str:
        """Accept one device's report into its Aggregator; return a short acknowledgement.

        The report's weight is ``num_examples`` capped at the influence bound, its delta is scaled to
        the norm bound, and its metrics are range-checked (``hamrah.server.influence``).

        Raises:
            ProtocolError: stale or unknown task, a task of another device, a second report, or an
                update that does not match the model (names, shapes, dtypes, finite values, sizes), or
                metrics out of range.
        """
        info = self.admit(device, header)
        rs = self.current
        if header.status in (pb.ABORTED, pb.FAILED):
            info.status = "aborted" if header.status == pb.ABORTED else "failed"
            if rs.secure is not None:
                rs.secure.leave(info.task_id)
            log.info("round %d: device %s %s its task: %s", rs.round, device[:8], info.status, header.reason[:200])
            rs.progress.set()
            return info.status
        if header.status != pb.COMPLETED:
            raise ProtocolError(f"report status {header.status}: expected COMPLETED, ABORTED or FAILED")
        if not 1 <= header.num_examples <= MAX_EXAMPLES:
            raise ProtocolError(f"num_examples = {header.num_examples}: expected 1..{MAX_EXAMPLES}")
        if info.kind == "evaluate":
            if payload:
                raise ProtocolError("an evaluate report carries metrics loss and accuracy and no update")
            metrics = check_metrics(decode_metrics(header.metrics), required=("loss", "accuracy"))
            rs.evals.append((self._weight(rs, header.num_examples), metrics))
            info.status = "reported"
            rs.progress.set()
            return "accepted"
        if self.secure_stage() is not None:
            raise ProtocolError("this round uses secure aggregation: a training update goes through the "
                                "SecureAggregation stream, not Report")
        self._fold(rs, info, *self._decode_result(info, header, payload))
        info.status = "reported"
        if rs.selection_open and self._reports(rs) >= rs.goal:
            self._close_selection(rs)
        rs.progress.set()
        return "accepted"

    # --- the round loop ------------------------------------------------------------------------

    async def run(self) -> None:
        """Run rounds until ``run.rounds`` are committed (or the target is reached, if asked)."""
        r, attempt = self.last_round + 1, 1
        while r <= self.run_plan.rounds and not self.finished and not self.draining:
            if self.pipeline is not None and not self.pipeline.may_run(r):
                break
            record = await self._round(r, attempt)
            if record is None:
                if attempt >= self.cfg.max_round_attempts:
                    self.finished = True
                    self._opened.set()
                    raise NotEnoughClients(
                        f"round {r}: abandoned {attempt} times (server.max_round_attempts = "
                        f"{self.cfg.max_round_attempts}); expected enough devices checking in and reporting "
                        "(see the warnings above for why each attempt failed); committed rounds are kept")
                attempt += 1
                await asyncio.sleep(self.cfg.retry_delay_s)
                continue
            r, attempt = r + 1, 1
            acc, target = record.get("test_accuracy"), self.run_plan.target_accuracy
            if self.run_plan.stop_at_target and acc is not None and target is not None and acc >= target:
                log.info("target accuracy %.4f reached at round %d: stopping", target, record["round"])
                break
        self.finished = not self.draining  # a drained server is restarting: devices should come back
        self._opened.set()

    def drain(self) -> None:
        """Start no new round (SIGTERM): :meth:`run` returns after the round in flight."""
        self.draining = True

    def _prepare_checkpoint(self) -> None:
        tensors = dict(self.params)
        extra = self.algorithm.broadcast(self.server_state)
        if extra:
            tensors.update({BROADCAST_PREFIX + k: v for k, v in extra.items()})
        self._ckpt = encode_params(tensors)
        self._ckpt_sha = sha256(self._ckpt)

    async def _round(self, r: int, attempt: int) -> dict | None:
        cfg = self.cfg
        self._prepare_checkpoint()
        buffered = self.aggregator is not None  # a robust rule needs each report; every algorithm streams
        self.master.start_round(buffered=buffered or (self.pipeline is not None and self.pipeline.buffered))
        rs = RoundState(r, attempt, self.goal, cfg.selection_target(self.goal), time.monotonic(),
                        eval_target=cfg.eval_devices)
        self.current = rs
        self._opened.set()
        log.info("round %d%s: selecting %d devices (goal %d)", r, f" (attempt {attempt})" if attempt > 1 else "",
                 rs.target, rs.goal)
        try:
            await asyncio.wait_for(rs.selected.wait(), cfg.selection_timeout_s)
        except asyncio.TimeoutError:
            pass
        self._close_selection(rs)
        selected, t_sel = rs.picked("train"), time.monotonic() - rs.started
        if selected < math.ceil(cfg.min_selected_fraction * rs.goal):
            log.warning("round %d: abandoned in selection: %d devices selected, %d needed; retrying", r, selected,
                        math.ceil(cfg.min_selected_fraction * rs.goal))
            self.current = None
            rs.secure_ready.set()
            return None
        rs.reporting_open = True
        rs.reporting_deadline = time.monotonic() + cfg.reporting_timeout_s
        secure = None
        if self.secure_stage() is not None:
            secure = await self._secure_round(rs)
        else:
            await self._await_reports(rs)
        rs.reporting_open = False
        if secure is None:
            self._release(rs, closing=True)  # reports still held for want of a norm bound are folded in now
        reported = secure.contributors if secure is not None else self.master.reports()
        t_rep, needed = time.monotonic() - rs.started - t_sel, cfg.reports_needed(rs.goal)
        if secure is None and reported < rs.goal:  # the round waited for them until its deadline
            for device in no_shows(rs):
                self.no_show[device] = r + cfg.no_show_rounds
        if reported < needed:
            log.warning("round %d: abandoned in reporting: %d reports, %d needed; retrying", r, reported, needed)
            self.current = None
            return None
        try:
            record = await asyncio.to_thread(self._commit, rs, t_sel, t_rep, secure)
        except ProtocolError as err:
            log.warning("round %d: refused the aggregate, the round is repeated: %s", r, err)
            self.refused_aggregates += 1
            return None
        finally:
            self.current = None
        self.round_s = 0.7 * self.round_s + 0.3 * record["round_s"]
        acc = record.get("test_accuracy")
        dev = record.get("device_accuracy")
        log.info("round %d: selected %d (goal %d), reported %d, dropped %d%s, %s%s%.1f s", r, selected, rs.goal, reported,
                 selected - reported, f", refused {rs.refused}" if rs.refused else "",
                 f"accuracy {acc:.4f}, " if acc is not None else "",
                 f"on-device accuracy {dev:.4f} ({record['eval_reported']} devices), " if dev is not None else "",
                 record["round_s"])
        return record

    async def _await_reports(self, rs: RoundState) -> None:
        while True:
            answered = sum(t.status != "selected" for t in rs.tasks.values())
            if self._reports(rs) >= rs.goal or answered >= len(rs.tasks):
                return
            left = rs.reporting_deadline - time.monotonic()
            if left <= 0:
                return
            rs.progress.clear()
            try:
                await asyncio.wait_for(rs.progress.wait(), left)
            except asyncio.TimeoutError:
                return

    def _commit(self, rs: RoundState, t_sel: float, t_rep: float, secure: SecureOutcome | None = None) -> dict:
        reports = []
        if secure is None:  # finalize may block (Ray backend): runs in a worker thread
            aggregate, reports = self.master.finalize(self.algorithm.statistics, self.aggregator)
            reported = self.master.reports()
        else:
            aggregate, reported = secure.aggregate, secure.contributors
            self.pipeline.bytes_up += rs.secure.bytes_up
        if self.pipeline is not None:
            aggregate = self.pipeline.server_half(aggregate, reports, rs.round, reported)
        if aggregate is None:
            raise NotEnoughClients(f"round {rs.round}: no report reached the aggregate")
        train_loss = aggregate.metric("train_loss")
        params, state = self.algorithm.apply(self.params, aggregate, self.server_state)
        tensors, scalars = flatten_state(state)
        check_finite(params, f"round {rs.round}'s new model")
        check_finite(tensors, f"round {rs.round}'s server state")
        record = round_record(rs, reported, train_loss, self.master.lost, t_sel, t_rep)
        if secure is not None:
            record.update(secagg_survivors=secure.survivors, bytes_down_protocol=rs.secure.bytes_down)
        if self.test_data is not None and (rs.round % self.run_plan.eval_every == 0 or rs.round == self.run_plan.rounds):
            t0 = time.monotonic()
            loss, acc = evaluate(self.model, params, self.test_data, self.ignore_index)
            record.update(test_loss=loss, test_accuracy=acc, eval_s=round(time.monotonic() - t0, 3))
        if self.pipeline is not None:
            record.update(self.pipeline.record_round())
        record["round_s"] = round(time.monotonic() - rs.started, 3)
        record["elapsed_s"] = round(self.elapsed_before + time.monotonic() - self.started, 3)
        self.store.commit(rs.round, params, tensors, scalars, record, self.totals() if self.totals else None)
        self.params, self.server_state, self.last_round = params, state, rs.round
        return record
