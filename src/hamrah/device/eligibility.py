"""When a device may train: idle, charging and on an unmetered network (Bonawitz et al. 2019, 3.1).

The state comes from a pluggable source: :class:`HostState` reads this machine, :class:`ScriptedState`
plays a script (tests and simulated fleets).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from hamrah.core.errors import ConfigError
from hamrah.data.schema import Schema


@dataclass(frozen=True)
class DeviceState:
    idle: bool = True
    charging: bool = True
    unmetered: bool = True
    battery: float = -1.0  # 0..1, negative when unknown

    def blockers(self) -> list[str]:
        """Return the conditions that stop training now (empty when eligible)."""
        names = (("idle", self.idle), ("charging", self.charging), ("on an unmetered network", self.unmetered))
        return [f"not {name}" for name, ok in names if not ok]

    @property
    def eligible(self) -> bool:
        return not self.blockers()


class StateSource(Protocol):
    def read(self) -> DeviceState: ...


class HostState:
    """This machine's state.

    Charging: psutil's battery reading; a machine without a battery runs on mains and counts as
    charging. Idle: system-wide CPU use below ``idle_cpu_percent`` over psutil's last interval.
    Unmetered: not detectable portably; taken from ``unmetered`` (a setting the app would own).
    """

    def __init__(self, idle_cpu_percent: float = 60.0, unmetered: bool = True):
        import psutil

        self._psutil = psutil
        self.idle_cpu_percent, self.unmetered = idle_cpu_percent, unmetered
        psutil.cpu_percent(None)  # prime the interval measurement

    def read(self) -> DeviceState:
        battery = self._psutil.sensors_battery() if hasattr(self._psutil, "sensors_battery") else None
        charging = True if battery is None or battery.power_plugged is None else bool(battery.power_plugged)
        level = -1.0 if battery is None else battery.percent / 100.0
        idle = self._psutil.cpu_percent(None) < self.idle_cpu_percent
        return DeviceState(idle=idle, charging=charging, unmetered=self.unmetered, battery=level)


class ScriptedState:
    """A scripted state: ``steps`` holds (reads, state) pairs: each state holds for that many reads.

    The last state holds forever. ``ScriptedState.always(DeviceState())`` is always eligible.
    """

    def __init__(self, steps: Sequence[tuple[int, DeviceState]]):
        if not steps:
            raise ConfigError("ScriptedState: expected at least one (reads, state) step")
        self.steps, self.reads = list(steps), 0

    @staticmethod
    def always(state: DeviceState | None = None) -> ScriptedState:
        return ScriptedState([(1, state or DeviceState())])

    def read(self) -> DeviceState:
        self.reads += 1
        left = self.reads
        for count, state in self.steps:
            if left <= count:
                return state
            left -= count
        return self.steps[-1][1]


class FunctionState:
    """A state computed by a callable (e.g. a fleet's churn script keyed on time)."""

    def __init__(self, fn: Callable[[], DeviceState]):
        self.fn = fn

    def read(self) -> DeviceState:
        return self.fn()


def data_blockers(
    store_schema: Schema | None, live_examples: int, expected: Schema | None = None, min_examples: int = 1
) -> list[str]:
    """Return why this device's Example Store cannot serve a task (empty when it can).

    Checked before a device checks in, beside :meth:`DeviceState.blockers`: a store whose schema is
    not the task's, or that holds too few live (unexpired) examples, is a reason to say so in one
    line instead of failing mid-round.

    Args:
        store_schema: the store's schema (``ExampleStore.schema``), None when it has none.
        live_examples: the store's live examples (``ExampleStore.count()``).
        expected: the schema the task declares, or None to accept any.
        min_examples: the fewest live examples worth training on.

    Returns:
        One line per problem, naming what was found and what was expected.
    """
    out = []
    if expected is not None and store_schema != expected:
        found = store_schema.describe() if store_schema is not None else "no schema"
        out.append(f"the example store holds ({found}), the task expects ({expected.describe()})")
    if live_examples < min_examples:
        out.append(f"the example store has {live_examples} live examples, the task needs at least {min_examples}")
    return out
