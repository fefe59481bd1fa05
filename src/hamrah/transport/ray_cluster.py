"""Ray for one process (the server's Aggregators, the simulator's workers), and the processes that must
die with it, even when it is SIGKILLed.

:class:`RaySession` joins the Ray instance this process already initialised, or the cluster named by
``RAY_ADDRESS``, or starts a local instance. A process that starts its own instance spawns Ray's daemons
(GCS server, raylet, workers): on a clean exit ``close`` (``ray.shutdown()``) stops them; on a SIGKILL
nothing in the process runs, and they used to be left orphaned. :func:`reap_on_death` starts a small
watchdog process that notices its parent is gone (it is re-parented) and kills the processes it was
given, and their children.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from hamrah.core.errors import ConfigError

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
    import psutil  # type: ignore[import-untyped]

    return [p.pid for p in psutil.Process(pid or os.getpid()).children(recursive=True)]


def reap_on_death(pids: list[int]) -> subprocess.Popen[bytes]:
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


def stop_reaper(watchdog: subprocess.Popen[bytes]) -> None:
    """End a watchdog without it killing anything (the server shut its processes down itself)."""
    if watchdog.poll() is None:
        watchdog.terminate()
        watchdog.wait(5)


def _probe(address: str, timeout_s: float = 10.0) -> None:
    """Refuse a ``RAY_ADDRESS`` of the form host:port where nothing listens (ConfigError)."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or "://" in address:  # "auto", "local", "ray://...": Ray's own
        return
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as e:
        raise ConfigError(
            f"RAY_ADDRESS = {address!r}: no Ray cluster answers there ({e}); expected the address of a "
            "running head node (ray start --head), or RAY_ADDRESS unset for a local instance"
        ) from None


class RaySession:
    """Ray for this process: the running instance, ``RAY_ADDRESS``'s cluster, or a local one it owns.

    Args:
        setting: the config key that asked for Ray, named in the error when Ray is not installed.

    Raises:
        ConfigError: the ``ray`` extra is not installed, ``RAY_ADDRESS`` names no running cluster, or Ray
            cannot start.
    """

    def __init__(self, setting: str):
        try:
            import ray
        except ImportError as e:
            raise ConfigError(f"{setting} = 'ray' needs the ray extra: pip install 'hamrah[ray]'") from e
        self.ray = ray
        self.owns = not ray.is_initialized()
        self._reaper: subprocess.Popen[bytes] | None = None
        if self.owns:  # joins RAY_ADDRESS's cluster if it is set, else starts a local instance
            address = os.environ.get("RAY_ADDRESS", "")
            _probe(address)  # ray.init retries an address where no cluster answers for ever
            try:
                ray.init(include_dashboard=False, log_to_driver=False)
            except (ConnectionError, RuntimeError, TimeoutError, ValueError) as e:
                ray.shutdown()
                where = f"the Ray cluster at RAY_ADDRESS = {address!r}" if address else "a local Ray instance"
                raise ConfigError(f"{setting} = 'ray': cannot start {where} ({e}); expected Ray to start") from e
            self._reaper = reap_on_death(process_tree())  # Ray's daemons die with this process

    def close(self) -> None:
        """Shut Ray down if this session started it."""
        if self.owns and self.ray.is_initialized():
            self.ray.shutdown()
        if self._reaper is not None:
            stop_reaper(self._reaper)
            self._reaper = None


__all__ = ["RaySession", "process_tree", "reap_on_death", "stop_reaper"]
