"""Processes a server starts (Ray's daemons) die with it, even when it is SIGKILLed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil

from hamrah.server.reaper import process_tree, reap_on_death, stop_reaper

PARENT = """
import subprocess, sys, time
from hamrah.server.reaper import process_tree, reap_on_death
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
