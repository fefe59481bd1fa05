"""Processes that must die with the server, even when it is SIGKILLed.

A server that starts its own local Ray instance (``backend = "ray"`` without ``RAY_ADDRESS``) spawns
Ray's daemons (GCS server, raylet, workers). On a clean exit ``ray.shutdown()`` stops them; on a
SIGKILL nothing in the server runs, and they used to be left orphaned. :func:`reap_on_death` starts a
small watchdog process that notices its parent is gone (it is re-parented) and kills the processes it
was given, and their children.
"""

from __future__ import annotations

import os
import subprocess
import sys

_WATCHDOG = """
import os, signal, sys, time
parent, pids = int(sys.argv[1]), [int(p) for p in sys.argv[2:]]
while os.getppid() == parent:
    time.sleep(0.2)
for pid in pids:
    try:
        os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
"""


def process_tree(pid: int | None = None) -> list[int]:
    """Return the pids of every descendant of ``pid`` (default: this process), children first."""
    import psutil

    return [p.pid for p in psutil.Process(pid or os.getpid()).children(recursive=True)]


def reap_on_death(pids: list[int]) -> subprocess.Popen:
    """Start a watchdog that SIGKILLs ``pids`` once this process has died (for whatever reason).

    Args:
        pids: the processes to kill (e.g. :func:`process_tree` right after starting them).

    Returns:
        The watchdog process; :func:`stop_reaper` ends it on a clean exit.
    """
    return subprocess.Popen(
        [sys.executable, "-c", _WATCHDOG, str(os.getpid()), *map(str, pids)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def stop_reaper(watchdog: subprocess.Popen) -> None:
    """End a watchdog without it killing anything (the server shut its processes down itself)."""
    if watchdog.poll() is None:
        watchdog.terminate()
        watchdog.wait(5)


__all__ = ["process_tree", "reap_on_death", "stop_reaper"]
