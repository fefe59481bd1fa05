"""An in-process registry of what the server's gRPC edge sees: counters, per-device summaries, the
live round's counts and recent events. The dashboard and the Prometheus exporter read it.

The service calls one method per event (check-in, answer, report, refusal, bytes moved); each takes a
lock for a few dictionary updates, so readers on other threads (the dashboard's HTTP threads) see a
consistent snapshot. Nothing here holds update contents or example data: only device keys (already
pseudonymous digests), counts, reasons and times. The device table and the event list are bounded,
so a flood of bogus device keys cannot grow memory.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

SELECT_OUTCOMES = ("selected", "evaluate", "turned_away", "not_eligible", "finished")
REPORT_STATUSES = ("accepted", "aborted", "failed", "late")
DIRECTIONS = ("up", "down")
KEY_CHARS = 12  # characters of a device key shown (keys are already digests: no name, no address)


@dataclass
class DeviceView:
    """What the server knows about one device: no data, no update contents."""

    key: str
    first_seen: float
    last_checkin: float | None = None  # None: seen only in other calls (a refused one, say)
    eligible: bool | None = None
    checkins: int = 0
    tasks: int = 0
    reported: int = 0
    aborted: int = 0
    failed: int = 0
    late: int = 0
    refused: int = 0
    last: str = ""


@dataclass
class LiveRound:
    """Counts of the round the server is running now (from the service's events)."""

    round: int = 0
    selected: int = 0
    evaluate: int = 0
    reported: int = 0
    aborted: int = 0
    failed: int = 0
    late: int = 0  # stragglers: reports that came after their round closed
    refused: int = 0


class Telemetry:
    """The registry the server feeds; see the module docstring.

    Args:
        max_devices: devices kept (least recently seen dropped first).
        max_events: recent events kept.
        connected_s: a device seen within this many seconds counts as connected.
        clock: wall-clock seconds (injected in tests).
    """

    def __init__(
        self,
        max_devices: int = 10_000,
        max_events: int = 200,
        connected_s: float = 60.0,
        clock: Callable[[], float] = time.time,
    ):
        if max_devices < 1 or max_events < 1 or connected_s <= 0:
            raise ValueError("max_devices, max_events >= 1 and connected_s > 0 expected")
        self.max_devices, self.connected_s, self.clock = max_devices, connected_s, clock
        self._lock = threading.Lock()
        self.counters: collections.Counter = collections.Counter()  # (name, label) -> count
        self.devices: collections.OrderedDict[str, DeviceView] = collections.OrderedDict()
        self.events: collections.deque = collections.deque(maxlen=max_events)
        self.logs: collections.deque = collections.deque(maxlen=50)
        self.live = LiveRound()
        self.version = 0
        self.started = clock()

    def _device(self, key: str, now: float) -> DeviceView:
        key = key[:128]  # the table is keyed by the whole key; only its first KEY_CHARS are shown
        view = self.devices.pop(key, None) or DeviceView(key[:KEY_CHARS], now)
        self.devices[key] = view
        while len(self.devices) > self.max_devices:
            self.devices.popitem(last=False)
        return view

    def _event(self, now: float, kind: str, device: str, detail: str = "") -> None:
        self.events.append((round(now, 3), kind, device[:KEY_CHARS], detail[:120]))
        self.version += 1

    def _on_round(self, rnd: int) -> None:
        if rnd and rnd != self.live.round:
            self.live = LiveRound(round=rnd)

    def checkin(self, device: str, eligible: bool | None) -> None:
        """Count a check-in of ``device`` (``eligible``: idle, charging and unmetered, as it said)."""
        with self._lock:
            now = self.clock()
            view = self._device(device, now)
            view.last_checkin, view.eligible = now, eligible
            view.checkins += 1
            self.counters["checkins", ""] += 1
            self.version += 1

    def answered(self, device: str, outcome: str, rnd: int = 0) -> None:
        """Count the answer to a check-in: one of :data:`SELECT_OUTCOMES`."""
        with self._lock:
            now = self.clock()
            view = self._device(device, now)
            self._on_round(rnd)
            self.counters["selections", outcome] += 1
            view.last = outcome
            if outcome in ("selected", "evaluate"):
                view.tasks += 1
                setattr(self.live, outcome, getattr(self.live, outcome) + 1)
                self._event(now, outcome, device, f"round {rnd}")
            else:
                self.version += 1

    def report(self, device: str, status: str, rnd: int = 0, nbytes: int = 0) -> None:
        """Count a report of ``device``: one of :data:`REPORT_STATUSES`, with its upload size."""
        with self._lock:
            now = self.clock()
            view = self._device(device, now)
            self._on_round(rnd)
            self.counters["reports", status] += 1
            self.counters["bytes", "up"] += max(int(nbytes), 0)
            field = {"accepted": "reported", "aborted": "aborted", "failed": "failed", "late": "late"}.get(status)
            if field is not None:
                setattr(view, field, getattr(view, field) + 1)
                setattr(self.live, field, getattr(self.live, field) + 1)
            view.last = status
            self._event(now, f"report {status}", device, f"round {rnd}")

    def refused(self, device: str, reason: str, rnd: int = 0) -> None:
        """Count a refused call of ``device`` with its short ``reason`` (``guard.reason_of``)."""
        with self._lock:
            now = self.clock()
            view = self._device(device, now)
            self._on_round(rnd)
            self.counters["refusals", reason[:80]] += 1
            view.refused += 1
            view.last = "refused"
            self.live.refused += 1
            self._event(now, "refused", device, reason)

    def transferred(self, direction: str, nbytes: int) -> None:
        """Count ``nbytes`` moved ``direction`` ("up": device to server, "down": server to device)."""
        with self._lock:
            self.counters["bytes", direction] += max(int(nbytes), 0)

    def log_line(self, line: str) -> None:
        """Keep one server log line (the last 50 are shown on the overview page)."""
        with self._lock:
            self.logs.append(line[:500])
            self.version += 1

    def count(self, name: str, label: str = "") -> int:
        with self._lock:
            return self.counters[name, label]

    def snapshot(self, max_devices: int = 200) -> dict:
        """Return a JSON-ready copy: counters, the live round, the most recently seen devices, events."""
        with self._lock:
            now = self.clock()
            devices = list(self.devices.values())
            shown = [dict(vars(d)) for d in reversed(devices[-max_devices:])] if max_devices else []
            counters: dict[str, dict[str, int]] = {}
            for (name, label), n in self.counters.items():
                counters.setdefault(name, {})[label] = n
            recent = [d for d in devices if d.last_checkin is not None and now - d.last_checkin <= self.connected_s]
            connected, eligible = len(recent), sum(bool(d.eligible) for d in recent)
            return {
                "now": now,
                "version": self.version,
                "counters": counters,
                "live": asdict(self.live),
                "devices": shown,
                "known_devices": len(devices),
                "connected": connected,
                "eligible": eligible,
                "events": list(self.events)[-50:],
                "logs": list(self.logs),
            }


class LogRing(logging.Handler):
    """A logging handler that keeps a server's recent log lines in a :class:`Telemetry`."""

    def __init__(self, telemetry: Telemetry):
        super().__init__(logging.INFO)
        self.telemetry = telemetry
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.telemetry.log_line(self.format(record))
        except Exception:  # a log handler never raises into the server
            self.handleError(record)


__all__ = ["DIRECTIONS", "REPORT_STATUSES", "SELECT_OUTCOMES", "DeviceView", "LiveRound", "LogRing", "Telemetry"]
