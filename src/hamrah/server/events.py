"""The typed values the round state machine (``hamrah.server.machine``) takes and gives: a clock, the
events that happen to a round, the decisions it makes, and the report envelope the gRPC service
translates a ``ReportHeader`` into. No protobuf, asyncio or sockets here.

Events come from outside (a device, a timer, the shell that commits rounds); outputs are what the
shell must do (answer a device, prepare a round, commit one, log an abandonment).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from hamrah.core.records import RoundRecord
from hamrah.loop import End

# --- clocks -------------------------------------------------------------------------------------


class Clock(Protocol):
    """Where the machine reads the time (seconds, monotonic)."""

    def now(self) -> float: ...


class MonotonicClock:
    """The real clock: ``time.monotonic`` (the clock asyncio's loop uses)."""

    def now(self) -> float:
        return time.monotonic()


@dataclass
class FakeClock:
    """A clock that moves only when told: for tests and replays."""

    t: float = 0.0

    def now(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds`` (>= 0)."""
        if seconds < 0:
            raise ValueError(f"advance({seconds}): a clock does not go back")
        self.t += seconds


# --- the report envelope ------------------------------------------------------------------------

COMPLETED, ABORTED, FAILED = "completed", "aborted", "failed"


@dataclass(frozen=True)
class Report:
    """One device report as the Coordinator sees it (translated from ``ReportHeader`` + payload).

    ``status`` is "completed", "aborted" or "failed" (anything else is refused); ``metrics`` the
    decoded metrics; ``payload`` the safetensors bytes of a training update (empty otherwise).
    """

    task_id: str
    round: int
    status: str
    num_examples: int = 0
    metrics: Mapping[str, float] = field(default_factory=dict)
    payload: bytes = b""
    reason: str = ""
    task_metrics: Mapping = field(default_factory=dict)  # a user task's evaluation, with reductions (Metric values)


# --- events -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckedIn:
    """An eligible device checked in and asks for a task in the open round."""

    device: str


@dataclass(frozen=True)
class TaskAsked:
    """A device asked for its task's checkpoint (the download starts)."""

    device: str
    task_id: str


@dataclass(frozen=True)
class Downloaded:
    """A task's checkpoint was sent to its last byte."""

    device: str
    task_id: str


@dataclass(frozen=True)
class ReportArrived:
    """A report was accepted (training update folded in, or evaluation metrics kept).

    ``counted``: reports the Aggregators now hold towards the goal (a failed Aggregator's do not
    count); ``train_s``: the device's stated training time; ``upload_s``: header -> last byte.
    ``report``: the envelope itself, kept only when the run is recorded for replay.
    """

    device: str
    task_id: str
    round: int
    counted: int
    train_s: float | None = None
    upload_s: float | None = None
    report: Report | None = None


@dataclass(frozen=True)
class DeviceAborted:
    """A device gave up its task (``failed``: it broke; else it stopped being eligible)."""

    device: str
    task_id: str
    round: int
    failed: bool = False
    reason: str = ""


@dataclass(frozen=True)
class SiteFailed:
    """Cross-silo: a site cannot run the run's task (e.g. its store holds no examples); it is out."""

    device: str
    reason: str


@dataclass(frozen=True)
class SiteRejoined:
    """Cross-silo: a site taken out of the run checked in from a restarted process; it is back from the
    next round it is drawn for."""

    device: str


@dataclass(frozen=True)
class ReportRefused:
    """A message of a device was refused (malformed, unauthenticated, over a limit...)."""

    device: str
    reason: str


@dataclass(frozen=True)
class TimerFired:
    """The clock reached the machine's next deadline (the machine reads the clock itself)."""


@dataclass(frozen=True)
class OpenRound:
    """The shell prepared the due round (checkpoint, Aggregators): open its selection (``secure``: its
    reporting is a secure-aggregation protocol the shell runs, ended by :class:`SecureDone`)."""

    secure: bool = False


@dataclass(frozen=True)
class Stop:
    """Start no round any more (the privacy budget is spent, the operator drains the server)."""

    reason: str
    drained: bool = False


@dataclass(frozen=True)
class SecureDone:
    """The round's secure aggregation ended with ``contributors`` inputs summed (None: it aborted)."""

    contributors: int | None


@dataclass(frozen=True)
class Committed:
    """The shell committed the round (durably); ``record`` is what it wrote, ``end`` why the run ends
    after it (the shared round loop's decision; None: it goes on)."""

    round: int
    record: RoundRecord
    end: End | None = None


@dataclass(frozen=True)
class CommitRefused:
    """The shell refused the round's aggregate (not finite, too few reports left): repeat the round."""

    round: int
    reason: str


Event = (
    CheckedIn
    | TaskAsked
    | Downloaded
    | ReportArrived
    | DeviceAborted
    | SiteFailed
    | SiteRejoined
    | ReportRefused
    | TimerFired
    | OpenRound
    | Stop
    | SecureDone
    | Committed
    | CommitRefused
)

# --- outputs ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RoundDue:
    """Round ``round`` (attempt ``attempt``) should start: prepare it, then send :class:`OpenRound`."""

    round: int
    attempt: int


@dataclass(frozen=True)
class RoundOpened:
    round: int
    attempt: int
    target: int
    goal: int


@dataclass(frozen=True)
class TaskAssigned:
    """``device`` got a slot: ``task_id`` of ``kind`` ("train" or "evaluate") in ``round``."""

    device: str
    task_id: str
    round: int
    kind: str


@dataclass(frozen=True)
class NotDrawn:
    """``device`` gets no task now (not drawn, no round selecting, sitting out, or already waiting)."""

    device: str


@dataclass(frozen=True)
class SelectionClosed:
    round: int
    selected: int


@dataclass(frozen=True)
class ReportingOpened:
    """Reporting is open; with ``secure`` the shell runs the round's secure aggregation."""

    round: int
    secure: bool


@dataclass(frozen=True)
class CommitDue:
    """Reporting closed with ``reported`` reports: merge, apply, evaluate and commit the round."""

    round: int
    reported: int


@dataclass(frozen=True)
class RoundAbandoned:
    """The round is given up in ``phase`` ("selection", "reporting" or "commit"), to be retried."""

    round: int
    attempt: int
    phase: str
    message: str


@dataclass(frozen=True)
class SiteBack:
    """Cross-silo: ``device`` rejoined the run (``SiteRejoined``); ``left`` sites are in it now."""

    device: str
    left: int


@dataclass(frozen=True)
class SiteOut:
    """Cross-silo: ``device`` failed its task for ``reason`` and is out of the run; ``left`` sites remain
    (the shell logs it and tells the site at its next check-in)."""

    device: str
    reason: str
    left: int


@dataclass(frozen=True)
class SitesEvaluated:
    """Cross-silo: the sites scored round ``round``'s (final) model: ``evals`` are (weight, metrics)."""

    round: int
    evals: tuple[tuple[int, dict], ...]


@dataclass(frozen=True)
class RunFailed:
    """A round was abandoned ``server.max_round_attempts`` times: the run stops with ``message``."""

    message: str


Output = (
    RoundDue
    | RoundOpened
    | TaskAssigned
    | NotDrawn
    | SelectionClosed
    | ReportingOpened
    | CommitDue
    | RoundAbandoned
    | SiteOut
    | SiteBack
    | SitesEvaluated
    | End
    | RunFailed
)

__all__ = [
    "ABORTED",
    "COMPLETED",
    "FAILED",
    "CheckedIn",
    "Clock",
    "CommitDue",
    "CommitRefused",
    "Committed",
    "DeviceAborted",
    "Downloaded",
    "End",
    "Event",
    "FakeClock",
    "MonotonicClock",
    "NotDrawn",
    "OpenRound",
    "Output",
    "Report",
    "ReportArrived",
    "ReportRefused",
    "ReportingOpened",
    "RoundAbandoned",
    "RoundDue",
    "RoundOpened",
    "RunFailed",
    "SecureDone",
    "SelectionClosed",
    "SiteBack",
    "SiteFailed",
    "SiteOut",
    "SiteRejoined",
    "SitesEvaluated",
    "Stop",
    "TaskAsked",
    "TaskAssigned",
    "TimerFired",
]
