"""The Ray Aggregators backend when things go wrong: an actor that dies on its own mid-round stops counting
at once (so the round waits for live reports instead of committing short), silent actors cost one
deadline together, and a RAY_ADDRESS where no cluster answers is a ConfigError rather than a hang."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest
import torch

from hamrah.algorithms import DELTA
from hamrah.core.aggregate import Contribution
from hamrah.server.aggregators import master_aggregator

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.xdist_group("ray")  # one local Ray at a time: these tests share a worker


def _result(cid: int, value: float) -> Contribution:
    return Contribution(cid, {"delta/w": torch.full((3,), value)}, 1.0, {})


def test_an_actor_that_dies_on_its_own_stops_counting_before_the_round_closes(local_ray):
    master = master_aggregator(2, "ray")
    master.start_round(buffered=False)
    for i in range(4):
        master.route(i % 2).add(_result(i, float(i)))
    assert master.reports() == 4
    ray.kill(master.shares[0].actor)  # its process dies: nobody calls master.crash
    deadline = time.monotonic() + 30
    while master.reports() != 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert master.reports() == 2 and master.lost == 2  # the Coordinator waits for 2 more reports
    assert master.route(0) is master.shares[1]  # the next report goes to the live actor
    master.route(0).add(_result(4, 4.0))
    aggregate, _ = master.finalize((DELTA,))
    assert aggregate.count == 3 and torch.allclose(aggregate.mean(DELTA)["w"], torch.full((3,), 8 / 3))
    master.close()


@ray.remote
class _Silent:
    def partial(self):
        time.sleep(120)


def test_silent_actors_share_one_deadline(local_ray, monkeypatch):
    from hamrah.server import ray_backend

    monkeypatch.setattr(ray_backend, "GATHER_TIMEOUT_S", 3.0)
    shares = [ray_backend.RayShare(i, _Silent.remote()) for i in range(2)]
    backend = ray_backend.RayBackend()
    t0 = time.monotonic()
    assert backend.gather(shares) == [None, None]
    assert time.monotonic() - t0 < 5.5  # not 2 x 3 s, one after the other
    assert not any(s.alive for s in shares)
    backend.close()


def test_a_ray_address_where_nothing_listens_is_a_config_error():
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = "from hamrah.transport.ray_cluster import RaySession\nRaySession('server.backend')"
    env = {**os.environ, "RAY_ADDRESS": f"127.0.0.1:{port}"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert f"ConfigError: RAY_ADDRESS = '127.0.0.1:{port}': no Ray cluster answers there" in done.stderr
