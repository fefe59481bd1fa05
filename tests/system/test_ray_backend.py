"""The Ray actor backend (``[server] backend = "ray"``) on a local Ray instance: the same Aggregator
class as Ray actors gives the asyncio backend's model, and a killed actor loses only its share."""

from __future__ import annotations

import asyncio
import sys

import pytest
import torch
from tests.system.harness import experiment, make_setup, run_system, serve_cohort

from hamrah.algorithms import DELTA
from hamrah.core.aggregate import Contribution
from hamrah.core.errors import ConfigError
from hamrah.core.metrics import Weighted
from hamrah.core.params import max_abs_diff
from hamrah.experiments.runner import prepare
from hamrah.server.aggregators import MasterAggregator, master_aggregator
from hamrah.server.state import ServerStore
from hamrah.simulation import SimulationConfig, Simulator, seeded

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.xdist_group("ray")  # one local Ray at a time: these tests share a worker


def result(cid: int, value: float, n: int) -> Contribution:
    return Contribution(cid, {"delta/w": torch.full((3,), value)}, float(n), {"train_loss": Weighted.of(value, n)})


def test_missing_ray_is_a_config_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    monkeypatch.delitem(sys.modules, "hamrah.server.ray_backend", raising=False)
    with pytest.raises(ConfigError, match=r"needs the ray extra: pip install 'hamrah\[ray\]'"):
        master_aggregator(2, "ray")


def test_asyncio_backend_does_not_import_ray(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    master = master_aggregator(2, "asyncio")
    master.start_round(buffered=False)
    assert type(master.shares[0]).__name__ == "AggregatorShare"


def test_ray_shares_finalize_like_local_ones_and_a_killed_actor_loses_its_share(local_ray):
    reports = [result(i, float(i + 1), 10 * (i + 1)) for i in range(6)]
    outcomes = []
    for master in (MasterAggregator(3), master_aggregator(3, "ray")):
        master.start_round(buffered=False)
        for i, r in enumerate(reports):
            master.route(i % 3).add(r)
        lost = master.crash(1)  # reports 1 and 4: weights 20 and 50
        outcomes.append((lost, master.reports(), master.finalize((DELTA,))[0]))
        master.close()
    (lost_l, n_l, agg_l), (lost_r, n_r, agg_r) = outcomes
    assert lost_l == lost_r == 2 and n_l == n_r == 4
    # survivors: values 1, 3, 4, 6 with weights 10, 30, 40, 60 -> (10 + 90 + 160 + 360) / 140
    assert agg_r.weight == 140 and torch.allclose(agg_r.mean(DELTA)["w"], torch.full((3,), 620 / 140))
    assert max_abs_diff(agg_l.mean(DELTA), agg_r.mean(DELTA)) == 0.0
    assert agg_l.metric("train_loss") == agg_r.metric("train_loss") == pytest.approx(620 / 140)


def test_a_ray_actor_found_dead_at_finalize_is_lost(local_ray):
    master = master_aggregator(2, "ray")
    master.start_round(buffered=True)
    for i in range(4):
        master.route(i % 2).add(result(i, float(i), 5))
    ray.kill(master.shares[0].actor)  # dies behind the master's back
    aggregate, reports = master.finalize((DELTA,))
    assert sorted(r.client_id for r in reports) == [1, 3] and master.lost == 2 and aggregate.count == 2
    master.close()


def test_ray_backend_gives_the_asyncio_backends_model(tmp_path, local_ray):
    """Two rounds of FedAvg with the same seed and devices (the simulator's first cohort)."""
    algo = {"name": "fedavg", "client_fraction": 0.08, "local_epochs": 1, "batch_size": 10, "lr": 0.1}
    exp = experiment(rounds=2, num_clients=100, partition="shards", algorithm=algo)
    prep = prepare(exp)
    sim = Simulator(seeded(prep.model_factory, 0), prep.data, prep.algorithm, SimulationConfig(rounds=1, seed=0))
    cohort = [int(c) for c in sim.sample(1)]
    local, _ = serve_cohort(tmp_path / "asyncio", exp, cohort, aggregators=2, backend="asyncio")
    remote, summary = serve_cohort(tmp_path / "ray", exp, cohort, aggregators=2, backend="ray")
    assert type(remote.coordinator.master.backend).__name__ == "RayBackend" and summary["rounds_committed"] == 2
    assert max_abs_diff(remote.coordinator.params, local.coordinator.params) < 1e-5
    assert max_abs_diff(remote.coordinator.params, dict(seeded(prep.model_factory, 0).named_parameters())) > 1e-3


def test_killing_a_ray_aggregator_mid_round_loses_only_its_share(tmp_path, local_ray):
    setup, stores, tokens = make_setup(
        tmp_path,
        experiment(rounds=1),
        devices=16,
        goal_count=6,
        over_selection=2.0,
        min_reports=6,
        aggregators=2,
        backend="ray",
    )
    crashed = {}

    async def kill_one(server, port):
        coord = server.coordinator
        while True:
            rs = coord.current
            if rs is not None and coord.master.shares[0].count >= 1:
                crashed["actor"] = coord.master.shares[0].actor
                crashed["lost"] = coord.master.crash(0)
                return
            await asyncio.sleep(0.002)

    asyncio.run(run_system(setup, tmp_path / "state", stores, tokens, during=kill_one))
    store = ServerStore(tmp_path / "state", setup.config)
    recs = store.committed_rounds()
    store.close()
    assert [r["round"] for r in recs] == [1]
    assert crashed["lost"] >= 1 and recs[0]["lost_with_aggregators"] == crashed["lost"]
    assert recs[0]["reported"] >= 6  # the live actor took enough reports
    with pytest.raises(ray.exceptions.RayActorError):
        ray.get(crashed["actor"].partial.remote(), timeout=30)
