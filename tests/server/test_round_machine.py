"""The round state machine without sockets, asyncio or tensors: typed events and a fake clock."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hamrah.algorithms import FedAvg, LocalSGD
from hamrah.core.errors import ProtocolError
from hamrah.core.records import PhaseTimings, RoundRecord
from hamrah.loop import End, RoundLoop, RunPlan
from hamrah.server import events as ev
from hamrah.server.machine import COMMITTING, DUE, REPORTING, RETRY_WAIT, SELECTING, MachineConfig, RoundMachine
from hamrah.server.rounds import LateReport


def config(**kw) -> MachineConfig:
    base = dict(
        goal=4,
        target=6,
        reports_needed=3,
        min_selected=3,
        selection_timeout_s=10.0,
        reporting_timeout_s=20.0,
        selection_window_s=1.0,
        max_round_attempts=3,
        retry_delay_s=2.0,
        no_show_rounds=2,
    )
    return MachineConfig(**{**base, **kw})


class Driver:
    """A machine on a fake clock; answers RoundDue with OpenRound and CommitDue with Committed, which
    carries the decision of a round loop (``rounds``, ``target_accuracy`` and ``stop_at_target`` are
    its plan; the records' test accuracy is ``accuracy``)."""

    def __init__(self, seed=0, last_round=0, rounds=3, target_accuracy=None, stop_at_target=False, **kw):
        self.clock = ev.FakeClock(100.0)
        self.m = RoundMachine(config(**kw), self.clock, seed, last_round)
        plan = RunPlan(rounds, target_accuracy=target_accuracy, stop_at_target=stop_at_target)
        self.loop = RoundLoop(FedAvg(1.0, LocalSGD(1, 1, 0.1)), plan, {}, None, last_round)
        self.accuracy: float | None = None
        self.outs: list = []
        self.committed: list[int] = []
        self._carry(self.m.start(self.loop.ended))

    def feed(self, event) -> list:
        outs = self.m.handle(event)
        self._carry(outs)
        return outs

    def _carry(self, outs) -> None:
        for o in outs:
            self.outs.append(o)
            if isinstance(o, ev.TaskAssigned):
                assert self.m.no_show.get(o.device, 0) < o.round  # a device sitting out is never drawn
            if isinstance(o, ev.RoundDue):
                self.feed(ev.OpenRound())
            elif isinstance(o, ev.CommitDue):
                self.committed.append(o.round)
                rec = RoundRecord(o.round, self.accuracy, clients=o.reported, phases=PhaseTimings(round_s=1.0))
                self.feed(ev.Committed(o.round, rec, self.loop.commit(o.round, None, rec.test_accuracy)))

    def tick(self, seconds: float) -> list:
        self.clock.advance(seconds)
        return self.feed(ev.TimerFired())

    def check_in(self, *devices: str) -> None:
        for d in devices:
            self.feed(ev.CheckedIn(d))

    def assigned(self, round_idx: int | None = None) -> dict[str, ev.TaskAssigned]:
        return {
            o.device: o
            for o in self.outs
            if isinstance(o, ev.TaskAssigned) and (round_idx is None or o.round == round_idx)
        }

    def report(self, task: ev.TaskAssigned, counted: int) -> list:
        return self.feed(ev.ReportArrived(task.device, task.task_id, task.round, counted))

    def of(self, kind) -> list:
        return [o for o in self.outs if isinstance(o, kind)]


def devices(n: int, prefix: str = "d") -> list[str]:
    return [f"{prefix}{i:02d}" for i in range(n)]


def test_over_selection_draws_target_and_turns_the_rest_away():
    d = Driver()
    d.check_in(*devices(10))
    assert d.m.phase == SELECTING and not d.assigned()  # nothing before the selection window ends
    d.tick(1.0)
    assert len(d.assigned(1)) == 6  # ceil(goal 4 * over-selection 1.5)
    assert len([o for o in d.of(ev.NotDrawn)]) == 4
    assert d.m.phase == REPORTING and d.of(ev.SelectionClosed)[0].selected == 6


def test_the_goal_of_reports_closes_reporting_and_commits_then_later_reports_are_late():
    d = Driver()
    d.check_in(*devices(6))
    d.tick(1.0)
    tasks = list(d.assigned(1).values())
    for k, t in enumerate(tasks[:4], 1):
        d.report(t, k)
    assert d.committed == [1] and d.m.last_round == 1 and d.m.current.round == 2  # round 2 selecting already
    with pytest.raises(LateReport):
        d.report(tasks[4], 5)


def test_selection_timeout_with_too_few_devices_abandons_and_retries_after_the_delay():
    d = Driver()
    d.check_in("a", "b")
    d.tick(1.0)
    assert d.m.phase == SELECTING
    d.tick(9.0)  # the selection deadline
    (ab,) = d.of(ev.RoundAbandoned)
    assert ab.phase == "selection" and "2 devices selected, 3 needed" in ab.message
    assert d.m.phase == RETRY_WAIT and d.m.next_timer() == pytest.approx(d.clock.now() + 2.0)
    d.tick(1.9)
    assert d.m.phase == RETRY_WAIT
    d.tick(0.1)
    assert d.m.phase == SELECTING and d.m.current.attempt == 2


def test_reporting_timeout_commits_what_arrived_and_stragglers_sit_out():
    d = Driver()
    d.check_in(*devices(6))
    d.tick(1.0)
    tasks = sorted(d.assigned(1).values(), key=lambda t: t.device)
    for k, t in enumerate(tasks[:3], 1):
        d.report(t, k)
    assert d.m.phase == REPORTING
    d.tick(19.9)
    assert d.m.phase == REPORTING
    d.tick(0.1)
    assert d.committed == [1]
    stragglers = [t.device for t in tasks[3:]]
    assert all(d.m.no_show[s] == 1 + 2 for s in stragglers)
    d.check_in(*stragglers, "fresh")
    d.tick(1.0)
    assert set(d.assigned(2)) == {"fresh"}  # the no-shows sit out rounds 2 and 3


def test_aborts_and_failures_end_reporting_once_every_task_answered():
    d = Driver()
    d.check_in(*devices(6))
    d.tick(1.0)
    tasks = list(d.assigned(1).values())
    for k, t in enumerate(tasks[:3], 1):
        d.report(t, k)
    d.feed(ev.DeviceAborted(tasks[3].device, tasks[3].task_id, 1, failed=False, reason="unplugged"))
    d.feed(ev.DeviceAborted(tasks[4].device, tasks[4].task_id, 1, failed=True))
    assert d.m.phase == REPORTING
    rs = d.m.current
    d.feed(ev.DeviceAborted(tasks[5].device, tasks[5].task_id, 1))
    assert d.committed == [1] and rs.count("aborted") == 2 and rs.count("failed") == 1
    assert d.m.no_show == {}  # everyone answered: nobody sits out


def test_too_few_reports_abandon_in_reporting_and_the_retry_cap_ends_the_run():
    d = Driver(max_round_attempts=2)
    for _ in range(2):
        d.check_in(*devices(6))
        d.tick(1.0)
        tasks = list(d.assigned().values())[-6:]
        d.report(tasks[0], 1)
        for t in tasks[1:]:
            d.feed(ev.DeviceAborted(t.device, t.task_id, t.round))
        if d.m.phase == RETRY_WAIT:
            d.tick(2.0)
    assert [o.phase for o in d.of(ev.RoundAbandoned)] == ["reporting", "reporting"]
    (failed,) = d.of(ev.RunFailed)
    assert "abandoned 2 times (server.max_round_attempts = 2)" in failed.message
    assert d.m.finished and d.committed == []


def test_refusals_are_counted_in_the_round_and_bad_device_events_change_nothing():
    d = Driver()
    d.check_in(*devices(6))
    d.tick(1.0)
    t = d.assigned(1)["d00"]
    d.feed(ev.ReportRefused("mallory", "ProtocolError: update"))
    d.feed(ev.ReportRefused("mallory", "ProtocolError: update"))
    assert d.m.current.refused == 2
    with pytest.raises(ProtocolError, match="another device"):
        d.report(ev.TaskAssigned("mallory", t.task_id, 1, "train"), 1)
    with pytest.raises(ProtocolError, match="round 7"):
        d.feed(ev.ReportArrived("d00", t.task_id, 7, 1))
    with pytest.raises(LateReport):
        d.feed(ev.TaskAsked("d00", "nope"))
    d.report(t, 1)
    with pytest.raises(ProtocolError, match="already reported"):
        d.report(t, 2)
    assert d.m.current.counted == 1


def test_resume_starts_after_the_last_committed_round_and_a_finished_run_starts_nothing():
    d = Driver(last_round=2)
    assert d.m.current.round == 3
    done = Driver(last_round=3)
    assert done.m.finished and done.of(ev.End)[0].reason == "rounds"


def test_stop_at_target_and_drain():
    d = Driver(target_accuracy=0.5, stop_at_target=True)
    d.check_in(*devices(6))
    d.tick(1.0)
    d.feed(ev.Stop("SIGTERM", drained=True))  # mid-round: the round finishes first
    assert d.m.phase == REPORTING
    for k, t in enumerate(list(d.assigned(1).values())[:4], 1):
        d.report(t, k)
    assert d.m.finished and d.of(ev.End)[0].reason == "drained"
    hit = Driver(target_accuracy=0.5, stop_at_target=True)
    hit.accuracy = 0.6
    hit.check_in(*devices(6))
    hit.tick(1.0)
    for k, t in enumerate(list(hit.assigned(1).values())[:4], 1):
        hit.report(t, k)
    assert hit.committed == [1] and hit.of(ev.End) == [ev.End("target", "target accuracy 0.5000 reached at round 1")]
    m = RoundMachine(config(), ev.FakeClock(), 0)
    m.start()
    m.handle(ev.OpenRound())
    m.phase = COMMITTING
    out = m.handle(ev.Committed(1, RoundRecord(1, phases=PhaseTimings(round_s=1.0)), End("budget", "spent")))
    assert out == [ev.End("budget", "spent")]  # the machine ends the run when the loop says so


def test_evaluate_slots_are_filled_beside_the_training_target():
    d = Driver(eval_target=2)
    d.check_in(*devices(12))
    d.tick(1.0)
    kinds = [t.kind for t in d.assigned(1).values()]
    assert kinds.count("train") == 6 and kinds.count("evaluate") == 2


@settings(max_examples=40, deadline=None)
@given(order=st.permutations(devices(12)), seed=st.integers(0, 2**16))
def test_the_draw_depends_on_the_seed_not_on_arrival_order(order, seed):
    first, second = Driver(seed=seed), Driver(seed=seed)
    first.check_in(*devices(12))
    second.check_in(*order)
    first.tick(1.0)
    second.tick(1.0)
    assert {k: v.kind for k, v in first.assigned().items()} == {k: v.kind for k, v in second.assigned().items()}


_EVENTS = st.lists(
    st.tuples(
        st.sampled_from(["checkin", "report", "abort", "refuse", "tick"]), st.integers(0, 15), st.floats(0.0, 12.0)
    ),
    max_size=80,
)


@settings(max_examples=60, deadline=None)
@given(script=_EVENTS, seed=st.integers(0, 1000))
def test_invariants_hold_under_arbitrary_event_sequences(script, seed):
    """Whatever devices and timers do: at most ``target`` trainers, one task per device per round,
    no sitting-out device drawn, commits only with enough reports, and the machine never stalls
    (it always has a timer unless it has finished)."""
    d = Driver(seed=seed, rounds=4)
    for kind, k, dt in script:
        rs = d.m.current
        tasks = list(rs.tasks.values()) if rs is not None else []
        try:
            if kind == "checkin":
                d.check_in(f"d{k:02d}")
            elif kind == "tick":
                d.tick(dt)
            elif tasks:
                t = tasks[k % len(tasks)]
                if kind == "report":
                    d.feed(ev.ReportArrived(t.device, t.task_id, t.round, rs.counted + 1))
                elif kind == "abort":
                    d.feed(ev.DeviceAborted(t.device, t.task_id, t.round))
                else:
                    d.feed(ev.ReportRefused(t.device, "refused"))
        except ProtocolError:
            pass  # a second report or a late one: refused, nothing changed
        rs = d.m.current
        if rs is not None:
            assert rs.picked("train") <= rs.target
            assert len({t.device for t in rs.tasks.values()}) == len(rs.tasks)
        assert d.m.finished or d.m.next_timer() is not None or d.m.phase == DUE
    for o in d.of(ev.CommitDue):
        assert o.reported >= 3


class _Ticking(ev.FakeClock):
    """A clock that moves on by a millisecond every time it is read (a busy server between reads)."""

    def now(self) -> float:
        self.t += 0.001
        return self.t


def test_an_event_is_handled_at_one_instant_the_time_its_journal_entry_records():
    clock = _Ticking(100.0)
    m = RoundMachine(config(selection_window_s=0.0), clock, journal=True)
    m.start()
    m.handle(ev.OpenRound())
    for d in ("a", "b", "c"):
        m.handle(ev.CheckedIn(d))
    times = {type(e).__name__: at for at, e, _ in m.journal}
    rs = m.current
    assert rs.started == times["OpenRound"]  # not a later read: a replay at the recorded times sees the same
    assert rs.selection_deadline == times["OpenRound"] + 10.0
    assert [at for at, _, _ in m.journal] == sorted({at for at, _, _ in m.journal})  # one read per event


def test_a_second_report_is_a_protocol_error_even_after_the_round_stopped_taking_reports():
    clock = ev.FakeClock(0.0)
    m = RoundMachine(config(), clock)
    m.start()
    m.handle(ev.OpenRound())
    for d in devices(6):
        m.handle(ev.CheckedIn(d))
    clock.advance(1.0)
    tasks = [o for o in m.handle(ev.TimerFired()) if isinstance(o, ev.TaskAssigned)]
    for i, t in enumerate(tasks[:4], 1):  # the goal (4): reporting closes, the round waits for its commit
        outs = m.handle(ev.ReportArrived(t.device, t.task_id, t.round, i))
    assert m.phase == COMMITTING and any(isinstance(o, ev.CommitDue) for o in outs)
    with pytest.raises(ProtocolError, match="already reported"):  # the device's fault, not lateness
        m.handle(ev.ReportArrived(tasks[0].device, tasks[0].task_id, 1, 5))
    with pytest.raises(LateReport, match="no longer accepts"):  # a task that never answered is late
        m.handle(ev.ReportArrived(tasks[4].device, tasks[4].task_id, 1, 5))
