"""Processes a server starts (Ray's daemons) die with it, even when it is SIGKILLed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from hamrah.transport.ray_cluster import process_tree, reap_on_death, stop_reaper

PARENT = """
import subprocess, sys, time
from hamrah.transport.ray_cluster import process_tree, reap_on_death
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
reap_on_death(process_tree())  # what RayBackend does right after ray.init()
print(child.pid, flush=True)
time.sleep(120)
"""


def _gone(pid: int, within: float = 10.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


def test_children_die_when_their_parent_is_sigkilled():
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True)
    try:
        child = int(parent.stdout.readline())
        assert psutil.pid_exists(child)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(10)
        assert _gone(child), "the orphaned child outlived its SIGKILLed parent"
    finally:
        if parent.poll() is None:
            parent.kill()


def test_a_clean_shutdown_stops_the_watchdog_without_killing():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        assert child.pid in process_tree()
        watchdog = reap_on_death([child.pid])
        stop_reaper(watchdog)
        assert watchdog.poll() is not None and child.poll() is None
    finally:
        child.kill()
        child.wait(10)


RAY_SERVER = """
import sys, time
from hamrah.transport.ray_cluster import process_tree
from hamrah.server.ray_backend import RayBackend
backend = RayBackend()                 # what a server with backend = "ray" does: its own local Ray
share = backend.spawn(0, False)        # an actor: a Ray worker started after the watchdog
backend.gather([share])
print(" ".join(map(str, process_tree())), flush=True)
time.sleep(300)
"""


@pytest.mark.slow
@pytest.mark.xdist_group("ray")  # with tests/system/test_ray_backend.py: one local Ray at a time
def test_a_sigkilled_ray_server_leaves_no_ray_process_behind():
    """The review's case on real Ray: the GCS server, raylet and the actor's worker all die with the server."""
    pytest.importorskip("ray")
    server = subprocess.Popen(
        [sys.executable, "-c", RAY_SERVER], stdout=subprocess.PIPE, text=True, stderr=subprocess.DEVNULL
    )
    try:
        line = server.stdout.readline()
        pids = [int(p) for p in line.split()]
        names = {p: psutil.Process(p).name() for p in pids if psutil.pid_exists(p)}
        assert any("raylet" in n for n in names.values()), names  # Ray really started its daemons
        os.kill(server.pid, signal.SIGKILL)
        server.wait(10)
        left = {p: n for p, n in names.items() if not _gone(p, within=30.0)}
        assert not left, f"Ray processes outlived the SIGKILLed server: {left}"
    finally:
        if server.poll() is None:
            server.kill()
