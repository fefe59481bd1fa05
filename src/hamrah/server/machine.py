"""The Coordinator's round logic as a state machine: typed events in, decisions out, time from an
injected clock (Bonawitz et al. 2019, *Towards Federated Learning at Scale*, section 4.2).

No protobuf, asyncio, sockets or tensors: the asyncio shell (``hamrah.server.coordinator``) turns
gRPC calls and timers into :mod:`hamrah.server.events` events and carries out the outputs; a test
drives the same machine with a :class:`~hamrah.server.events.FakeClock`.

A round: *due* (the shell prepares the checkpoint and sends ``OpenRound``) -> *selection* (check-ins
within ``selection_window_s`` of the first are drawn from at random with the seeded rng, until
``target`` are selected, the goal's reports have arrived, or ``selection_timeout_s`` passes; fewer
than ``min_selected`` abandons the round) -> *reporting* (until ``goal`` reports are counted, every
task has answered, or ``reporting_timeout_s`` passes; a secure round ends when its protocol does;
fewer than ``reports_needed`` abandons it; training devices that never answered sit out
``no_show_rounds`` rounds) -> *commit* (the shell commits, then sends ``Committed`` or
``CommitRefused``). An abandoned or refused round is retried after ``retry_delay_s``, at most
``max_round_attempts`` times; then the run fails. When the run ends is not the machine's decision but
the shared round loop's (:class:`hamrah.loop.RoundLoop`): ``start`` and ``Committed`` carry it.

Cross-silo (``cross_silo``): see :mod:`hamrah.server.sites`.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable

from hamrah.core.errors import ProtocolError
from hamrah.loop import End
from hamrah.server import events as ev
from hamrah.server.machine_config import MachineConfig
from hamrah.server.rounds import (
    COMMITTING,
    DUE,
    FINISHED,
    REPORTING,
    RETRY_WAIT,
    SELECTING,
    LateReport,
    RoundState,
    TaskInfo,
    draw,
    no_shows,
)
from hamrah.server.sites import SiteExits


class RoundMachine(SiteExits):
    """Selection and reporting for one population's rounds; see the module docstring.

    Args:
        cfg: the settings.
        clock: where time is read (``now()``); nothing here sleeps.
        seed: seeds the draw of check-ins and of task kinds (``random.Random(seed)``); pace steering
            has its own stream, so answering turned-away devices never changes a cohort.
        last_round: the last committed round (a resumed run starts after it).
        new_task_id: makes task ids (default: random uuid4 hex; a replay passes the recorded ones).
        journal: keep ``(time, event, outputs)`` of every event handled (to record a run).
    """

    def __init__(
        self,
        cfg: MachineConfig,
        clock: ev.Clock,
        seed: int = 0,
        last_round: int = 0,
        new_task_id: Callable[[], str] | None = None,
        journal: bool = False,
    ):
        self.cfg, self.clock = cfg, clock
        self.rng = random.Random(seed)
        self.pace_rng = random.Random(f"{seed}/pace")
        self.new_task_id = new_task_id or (lambda: uuid.uuid4().hex)
        self.last_round, self.next_round, self.attempt = last_round, last_round + 1, 1
        self.phase = DUE
        self.current: RoundState | None = None
        self.no_show: dict[str, int] = {}  # device -> last round it sits out
        self.round_s = cfg.reconnect_min_s  # moving average of committed rounds' durations
        self.retry_at: float | None = None
        self.draining = False
        self.failure: str | None = None
        self.out: dict[str, str] = {}  # cross-silo: sites out of the run -> why
        self.evaluating = False  # cross-silo: the sites are scoring the final model (no commit follows)
        self.journal: list[tuple[float, ev.Event, list[ev.Output]]] | None = [] if journal else None
        self._at: float | None = None  # the time of the event being handled

    def _now(self) -> float:
        """The time of the event being handled (one instant per event: a replay sees the same), else now."""
        return self._at if self._at is not None else self.clock.now()

    @property
    def finished(self) -> bool:
        return self.phase == FINISHED

    @property
    def round_in_flight(self) -> RoundState:
        """The round being selected, reported or committed (LateReport between rounds and after the run)."""
        if self.current is None:
            raise LateReport(f"no round is in flight ({self.phase})")
        return self.current

    def start(self, ended: End | None = None) -> list[ev.Output]:
        """Return the first decision: the first round is due, or (``ended``: the loop's reason) the run
        has nothing left to do."""
        if ended is not None:
            return self._finish(ended.reason, ended.message)
        return [ev.RoundDue(self.next_round, self.attempt)]

    # --- queries -------------------------------------------------------------------------------

    def next_timer(self) -> float | None:
        """Return when the machine next wants a :class:`TimerFired` (clock time), or None."""
        rs = self.current
        times = []
        if self.phase == RETRY_WAIT and self.retry_at is not None:
            times.append(self.retry_at)
        if rs is not None and self.phase == SELECTING:
            times.append(rs.selection_deadline)
            if rs.draw_at is not None:
                times.append(rs.draw_at)
        if rs is not None and self.phase == REPORTING and not rs.secure_mode:
            times.append(rs.reporting_deadline)
        return min(times) if times else None

    def has_task(self, device: str) -> bool:
        rs = self.current
        return rs is not None and any(t.device == device for t in rs.tasks.values())

    def live_task(self, task_id: str, device: str) -> TaskInfo:
        """Return ``device``'s task ``task_id`` of the round in flight.

        Raises:
            LateReport: the task is not one of the current round (late or unknown).
            ProtocolError: it belongs to another device.
        """
        rs = self.current
        info = rs.tasks.get(task_id) if rs is not None else None
        if info is None:
            raise LateReport(f"task {task_id[:12]!r} is not a task of the current round (late or unknown)")
        if info.device != device:
            raise ProtocolError(f"task {task_id[:12]!r} belongs to another device")
        return info

    def admit(self, device: str, task_id: str, round_idx: int) -> TaskInfo:
        """Check a report's header before its payload is read.

        Raises:
            LateReport: the task's round has closed or moved on, or its goal is met.
            ProtocolError: unknown task, a task of another device, another round, or a second report.
        """
        info = self.live_task(task_id, device)
        rs = self.round_in_flight
        if round_idx != rs.round:
            raise ProtocolError(f"report for round {round_idx}, the task is in round {rs.round}")
        if info.status != "selected":  # a task answers once, whether or not its round still takes reports
            raise ProtocolError(f"task {task_id[:12]!r} already {info.status}")
        if self.phase not in (SELECTING, REPORTING) or (info.kind == "train" and rs.counted >= rs.goal):
            raise LateReport(f"round {rs.round} no longer accepts reports")
        return info

    def reconnect_after(self) -> float:
        """Pace steering: when a turned-away device should come back: about when the next round's
        selection opens (from recent round durations), spread over half a round so devices do not
        return at once, within [reconnect_min_s, reconnect_max_s]."""
        rs = self.current
        elapsed = self._now() - rs.started if rs is not None else 0.0
        wait = max(self.round_s - elapsed, 0.0) + self.pace_rng.uniform(0.0, 0.5 * self.round_s)
        return min(max(wait, self.cfg.reconnect_min_s), self.cfg.reconnect_max_s)

    # --- events --------------------------------------------------------------------------------

    def handle(self, event: ev.Event) -> list[ev.Output]:
        """Apply one event; return what the shell must do, in order.

        Raises:
            LateReport, ProtocolError: a device event that does not fit the round (nothing changes).
        """
        at = self.clock.now()  # when the event arrived: what a replay sets its clock to
        prev, self._at = self._at, at
        try:
            out = self._dispatch(event)
        finally:
            self._at = prev
        if self.journal is not None:
            self.journal.append((at, event, out))
        return out

    def _dispatch(self, e: ev.Event) -> list[ev.Output]:
        if isinstance(e, ev.CheckedIn):
            return self._checked_in(e.device)
        if isinstance(e, ev.TimerFired):
            return self._timers()
        if isinstance(e, (ev.ReportArrived, ev.DeviceAborted)):
            return self._answered(e)
        if isinstance(e, ev.TaskAsked):
            self.live_task(e.task_id, e.device)
            return []
        if isinstance(e, ev.Downloaded):
            info = self.live_task(e.task_id, e.device)
            info.downloaded_at = self._now()
            return []
        if isinstance(e, ev.SiteFailed):
            return self._site_out(e.device, e.reason)
        if isinstance(e, ev.SiteRejoined):
            return self._site_back(e.device)
        if isinstance(e, ev.ReportRefused):
            if self.current is not None:
                self.current.refused += 1
            return []
        if isinstance(e, ev.OpenRound):
            return self._open(e.secure)
        if isinstance(e, ev.Stop):
            self.draining = self.draining or e.drained
            if self.phase not in (DUE, RETRY_WAIT):
                return []  # the round in flight finishes first
            return self._finish("drained" if e.drained else "stopped", e.reason)
        if isinstance(e, ev.SecureDone):
            return self._close_reporting(e.contributors or 0) if self.phase == REPORTING else []
        if isinstance(e, ev.Committed):
            return self._committed(e)
        if isinstance(e, ev.CommitRefused):
            return self._abandon("commit", f"refused the aggregate, the round is repeated: {e.reason}")
        raise TypeError(f"not a round event: {e!r}")

    def _open(self, secure: bool) -> list[ev.Output]:
        if self.phase != DUE:
            raise ProtocolError(f"OpenRound while {self.phase}: expected a due round")
        now, c = self._now(), self.cfg
        goal, target = (self.sites_left(),) * 2 if c.cross_silo else (c.goal, c.target)
        round_idx, evals = (self.last_round, goal) if self.evaluating else (self.next_round, c.eval_target)
        self.current = RoundState(
            round_idx,
            self.attempt,
            goal,
            0 if self.evaluating else target,
            now,
            eval_target=evals,
            selection_deadline=now + c.selection_timeout_s,
            secure_mode=secure,
        )
        self.phase = SELECTING
        return [ev.RoundOpened(round_idx, self.attempt, target, goal)]

    def _checked_in(self, device: str) -> list[ev.Output]:
        rs = self.current
        if (
            rs is None
            or self.phase != SELECTING
            or self.has_task(device)
            or device in rs.candidates
            or device in self.out
            or self.no_show.get(device, 0) >= rs.round
        ):
            return [ev.NotDrawn(device)]
        rs.candidates.append(device)
        if rs.draw_at is None:
            rs.draw_at = self._now() + self.cfg.selection_window_s
        return []

    def _timers(self) -> list[ev.Output]:
        now, rs = self._now(), self.current
        out: list[ev.Output] = []
        if self.phase == RETRY_WAIT and self.retry_at is not None and now >= self.retry_at:
            self.retry_at, self.phase = None, DUE
            return [ev.RoundDue(self.next_round, self.attempt)]
        if rs is None:
            return out
        if self.phase == SELECTING and rs.draw_at is not None and now >= rs.draw_at:
            out += self._draw(rs)
        if self.phase == SELECTING and now >= rs.selection_deadline:
            out += self._close_selection(rs)
        if self.phase == REPORTING and not rs.secure_mode and now >= rs.reporting_deadline:
            out += self._close_reporting(rs.counted)
        return out

    def _draw(self, rs: RoundState) -> list[ev.Output]:
        waiting, rs.candidates, rs.draw_at = rs.candidates, [], None
        chosen = draw(waiting, rs.slots(), self.rng)
        out: list[ev.Output] = []
        for device in sorted(waiting):
            out.append(self._assign(rs, device) if device in chosen else ev.NotDrawn(device))
        if rs.slots() <= 0:
            out += self._close_selection(rs)
        return out

    def _assign(self, rs: RoundState, device: str) -> ev.TaskAssigned:
        """Give ``device`` a slot of ``rs``: a task of the kind still needed."""
        trains, evals = rs.picked("train"), rs.picked("evaluate")
        share = rs.eval_target / (rs.target + rs.eval_target)
        kind = "evaluate" if evals < rs.eval_target and (trains >= rs.target or self.rng.random() < share) else "train"
        info = TaskInfo(self.new_task_id(), device, rs.round, -1, kind, assigned_at=self._now())
        rs.tasks[info.task_id] = info
        return ev.TaskAssigned(device, info.task_id, rs.round, kind)

    def _close_selection(self, rs: RoundState) -> list[ev.Output]:
        out: list[ev.Output] = [ev.NotDrawn(d) for d in sorted(rs.candidates)]
        rs.candidates, rs.draw_at = [], None
        rs.selection_open, rs.selection_closed_at = False, self._now()
        selected = rs.picked("evaluate" if self.evaluating else "train")
        out.append(ev.SelectionClosed(rs.round, selected))
        if self.evaluating and selected == 0:
            return out + self._finish("rounds", "no site checked in to score the final model")
        if selected < self.min_selected() and not self.evaluating:
            return out + self._abandon(
                "selection",
                f"abandoned in selection: {selected} devices selected, {self.min_selected()} needed; retrying",
            )
        self.phase, rs.reporting_open = REPORTING, True
        rs.reporting_deadline = self._now() + self.cfg.reporting_timeout_s
        out.append(ev.ReportingOpened(rs.round, rs.secure_mode))
        return out + self._check_reporting(rs)

    def _answered(self, e: ev.ReportArrived | ev.DeviceAborted) -> list[ev.Output]:
        info = self.admit(e.device, e.task_id, e.round)
        rs = self.round_in_flight
        out: list[ev.Output] = []
        if isinstance(e, ev.DeviceAborted):
            info.status = "failed" if e.failed else "aborted"
            if e.failed and self.cfg.cross_silo:
                out = self._site_out(e.device, e.reason)
                if self.phase == FINISHED:
                    return out
        else:
            info.status, info.train_s, info.upload_s = "reported", e.train_s, e.upload_s
            rs.counted = e.counted
        if self.phase == SELECTING and rs.counted >= rs.goal:
            return out + self._close_selection(rs)
        return out + (self._check_reporting(rs) if self.phase == REPORTING else [])

    def _check_reporting(self, rs: RoundState) -> list[ev.Output]:
        if rs.secure_mode:
            return []
        if rs.counted >= rs.goal or rs.answered() or self._now() >= rs.reporting_deadline:
            return self._close_reporting(rs.counted)
        return []

    def _close_reporting(self, reported: int) -> list[ev.Output]:
        rs = self.round_in_flight
        rs.reporting_open, rs.reporting_closed_at = False, self._now()
        if self.evaluating:
            return [ev.SitesEvaluated(rs.round, tuple(rs.evals)), *self._finish("rounds")]
        if not rs.secure_mode and reported < rs.goal and self.cfg.no_show_rounds > 0:  # it waited for them
            for device in no_shows(rs):
                self.no_show[device] = rs.round + self.cfg.no_show_rounds
        if reported < self.needed():
            return self._abandon(
                "reporting", f"abandoned in reporting: {reported} reports, {self.needed()} needed; retrying"
            )
        self.phase = COMMITTING
        return [ev.CommitDue(rs.round, reported)]

    def _abandon(self, phase: str, message: str) -> list[ev.Output]:
        r, attempt = self.next_round, self.attempt
        self.current, self.retry_at = None, None
        out: list[ev.Output] = [ev.RoundAbandoned(r, attempt, phase, message)]
        if attempt >= self.cfg.max_round_attempts:
            self.failure = (
                f"round {r}: abandoned {attempt} times (server.max_round_attempts = "
                f"{self.cfg.max_round_attempts}); expected enough devices checking in and reporting "
                "(see the warnings above for why each attempt failed); committed rounds are kept"
            )
            self.phase = FINISHED
            return out + [ev.RunFailed(self.failure)]
        self.attempt += 1
        if self.draining:
            return out + self._finish("drained")
        self.phase, self.retry_at = RETRY_WAIT, self._now() + self.cfg.retry_delay_s
        return out

    def _committed(self, e: ev.Committed) -> list[ev.Output]:
        if self.phase != COMMITTING or e.round != self.next_round:
            raise ProtocolError(f"Committed({e.round}) while {self.phase} round {self.next_round}")
        rec = e.record
        if rec.phases is not None and rec.phases.round_s is not None:
            self.round_s = 0.7 * self.round_s + 0.3 * rec.phases.round_s
        self.current, self.last_round, self.next_round, self.attempt = None, e.round, e.round + 1, 1
        if e.end is not None and e.end.reason != "rounds":
            return self._finish(e.end.reason, e.end.message)
        if e.end is not None:
            if self.cfg.final_eval and not self.draining:  # the sites score the final model, then the run ends
                self.evaluating, self.phase = True, DUE
                return [ev.RoundDue(e.round, 1)]
            return self._finish("rounds")
        if self.draining:
            return self._finish("drained")
        self.phase = DUE
        return [ev.RoundDue(self.next_round, 1)]

    def _finish(self, reason: str, message: str = "") -> list[ev.Output]:
        self.phase, self.current = FINISHED, None
        return [ev.End(reason, message)]


__all__ = ["MachineConfig", "RoundMachine"]
