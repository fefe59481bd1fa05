"""The device side: the Example Store (SQLite), eligibility (idle, charging, unmetered), the FL
runtime that checks in with a server and runs its tasks, and fleets of runtimes with churn."""

from hamrah.device.config import DeviceConfig, DeviceStats
from hamrah.device.eligibility import DeviceState, FunctionState, HostState, ScriptedState, StateSource
from hamrah.device.fleet import Churn, make_tokens, run_fleet
from hamrah.device.runtime import DeviceRuntime, TaskAborted
from hamrah.device.store import ExampleStore, import_partition

__all__ = [
    "Churn",
    "DeviceConfig",
    "DeviceRuntime",
    "DeviceState",
    "DeviceStats",
    "ExampleStore",
    "FunctionState",
    "HostState",
    "ScriptedState",
    "StateSource",
    "TaskAborted",
    "import_partition",
    "make_tokens",
    "run_fleet",
]
