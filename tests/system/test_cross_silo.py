"""Cross-silo mode over real gRPC on loopback: three always-on sites, every site every round, a server
without a test set (federated evaluation only), and a site whose store does not fit the task."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import shutil

import numpy as np
import torch
from tests.system.harness import FAST, device_config, experiment, records, run_system
from torch import nn

from hamrah.algorithms import build, train_local
from hamrah.core.params import model_state
from hamrah.core.seeds import client_rng, init_seed
from hamrah.device import DeviceRuntime, ScriptedState
from hamrah.device.fleet import make_tokens
from hamrah.device.store import ExampleStore
from hamrah.experiments.serve import import_stores, server_setup
from hamrah.models import ModelSpec
from hamrah.server.config import server_config

SILO = {
    **{k: v for k, v in FAST.items() if k not in ("selection_timeout_s",)},
    "selection_timeout_s": 30.0,
    "mode": "cross_silo",
    "test_set": False,
    "site_eval_fraction": 0.2,
}


def _setup(tmp, sites: int, rounds: int = 3, **server):
    exp = experiment(rounds=rounds, num_clients=30, partition="iid")
    tokens = make_tokens(tmp / "tokens.txt", sites)  # the tokens file lists the sites: goal = 3
    setup = server_setup(exp, server_config({**SILO, "tokens_file": str(tmp / "tokens.txt"), **server}))
    stores = import_stores(exp, tmp / "stores", list(range(sites)))
    return setup, stores, tokens


def test_three_sites_train_every_round_with_federated_evaluation_only(tmp_path, caplog):
    setup, stores, tokens = _setup(tmp_path, 3)
    assert setup.goal == 3 and setup.test_data is None
    with caplog.at_level(logging.INFO):
        _, summary, stats = asyncio.run(
            run_system(setup, tmp_path / "state", stores, tokens, device_kw={"device_id": "hospital"})
        )
    recs = records(tmp_path / "state", setup)
    assert [r["round"] for r in recs] == [1, 2, 3] and summary["rounds_committed"] == 3
    assert all(r["selected"] == 3 and r["reported"] == 3 for r in recs)  # every site, no over-selection
    assert all(r.get("test_accuracy") is None for r in recs)  # the server holds no test set
    assert all(r["eval_reported"] == 3 and 0.0 <= r["device_accuracy"] <= 1.0 for r in recs)
    assert recs[-1]["device_accuracy"] > recs[0]["device_accuracy"]  # round 1 scores the initial model
    assert summary["final_eval_sites"] == 3 and summary["final_eval_examples"] == 3 * 400  # a fifth of 2000 each
    assert summary["final_device_accuracy"] > recs[0]["device_accuracy"] and summary["final_accuracy"] is None
    assert all(s.tasks == 4 for s in stats)  # three training tasks and one evaluate task of the final model
    assert all(s is not None and s.reported == 4 for s in stats) and any(s.finished for s in stats)
    text = caplog.text
    assert "device hospital-0: a cross-silo site" in text  # the device learned the mode from the server
    assert "device hospital-1: round 2: train task done: " in text and "bytes up" in text
    assert "device hospital-2 [" in text and "reported its train task" in text  # the server logs the name
    assert "round 3: final model: on-device accuracy" in text and "(3 sites, 1200 held-out examples)" in text


def test_a_site_whose_store_does_not_fit_is_told_and_the_others_go_on(tmp_path, caplog):
    setup, stores, tokens = _setup(tmp_path, 3)
    stores[2].unlink()
    with ExampleStore(stores[2]) as broken:  # tabular rows, not 28x28 images
        broken.add_many(np.zeros((20, 5), np.float32), np.zeros(20, np.int64))
    with caplog.at_level(logging.INFO):
        _, summary, stats = asyncio.run(
            run_system(setup, tmp_path / "state", stores, tokens, device_kw={"device_id": "site"})
        )
    recs = records(tmp_path / "state", setup)
    assert [r["round"] for r in recs] == [1, 2, 3] and summary["rounds_committed"] == 3
    assert recs[0]["failed"] == 1 and recs[0]["reported"] == 2  # round 1 goes on without it
    assert all(r["reported"] == 2 and r["selected"] == 2 for r in recs[1:])  # and it is not asked again
    assert stats[2].failed == 1 and stats[2].out_of_run and not stats[2].finished
    assert "this site is out of the run" in stats[2].messages[0] and "expects (1, 28, 28)" in stats[2].messages[0]
    assert all(s.reported == 4 for s in stats[:2])  # three rounds and the final evaluation
    expected = "the example store's inputs have shape (5,); the plan's model '2nn' expects (1, 28, 28)"
    device_lines = [r.message for r in caplog.records if r.name == "hamrah.device" and expected in r.message]
    server_lines = [r.message for r in caplog.records if r.name == "hamrah.server" and expected in r.message]
    assert any(line.startswith("device site-2: round 1: failed its task") for line in device_lines)
    assert any("device site-2 [" in line and "out of the run" in line for line in server_lines)
    assert any(line.startswith("told device site-2 [") for line in server_lines)


def test_a_site_with_an_empty_store_is_told_at_check_in(tmp_path, caplog):
    setup, stores, tokens = _setup(tmp_path, 3, min_reports=2)
    stores[1].unlink()
    with ExampleStore(stores[1]):
        pass  # an empty store
    with caplog.at_level(logging.INFO):
        _, summary, stats = asyncio.run(run_system(setup, tmp_path / "state", stores, tokens))
    assert summary["rounds_committed"] == 3
    assert stats[1].tasks == 0 and stats[1].out_of_run and "holds no examples" in stats[1].messages[0]
    assert all(r["selected"] == 2 for r in records(tmp_path / "state", setup))
    assert "out of the run" in caplog.text and "expected at least one example" in caplog.text


def _bn_build(self):
    """Every model of this test: a small MLP with BatchNorm (server and devices share the process)."""
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 10))


def test_batchnorm_buffers_are_federated_over_the_real_server(tmp_path, monkeypatch):
    monkeypatch.setattr(ModelSpec, "build", _bn_build)
    setup, stores, tokens = _setup(tmp_path, 3, rounds=1, site_eval_fraction=0.0)
    server, summary, _ = asyncio.run(run_system(setup, tmp_path / "state", stores, tokens))
    assert summary["rounds_committed"] == 1
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(init_seed(0))
        start = model_state(_bn_build(None))
    plan = build(**setup.algorithm_plan).local_plan()
    locals_ = []
    for k, path in enumerate(stores):
        with ExampleStore(path) as store:
            data = store.read_all()
        locals_.append(train_local(_bn_build(None), start, data, plan, client_rng(0, 1, k)).params)
    final = server.coordinator.params
    assert {"2.running_mean", "2.running_var"} <= set(final)
    for name in ("2.running_mean", "2.running_var"):  # three sites of 2000 examples: the plain mean
        torch.testing.assert_close(final[name], sum(p[name] for p in locals_) / 3, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(final["2.running_var"], start["2.running_var"])


def test_a_site_taken_out_rejoins_after_a_restart_with_a_fixed_store(tmp_path, caplog):
    """The operator fixes the store of a site the server took out and restarts its process: the new
    process checks in with a new session, rejoins, and trains from the next round on."""
    setup, stores, tokens = _setup(tmp_path, 3, rounds=4)
    fixed = tmp_path / "site2_fixed.db"
    shutil.copy(stores[2], fixed)
    stores[2].unlink()
    with ExampleStore(stores[2]) as broken:  # tabular rows, not 28x28 images
        broken.add_many(np.zeros((20, 5), np.float32), np.zeros(20, np.int64))
    restarted: dict = {}

    async def during(server, port):
        while not server.coordinator.machine.out:  # site 2 failed round 1 and is out
            await asyncio.sleep(0.02)
        cfg = device_config(port, population=setup.server.population, device_id="site-2", client_key=2)
        with ExampleStore(fixed) as store:
            runtime = DeviceRuntime(dataclasses.replace(cfg, token=tokens[2]), store, ScriptedState.always())
            restarted["stats"] = await runtime.run()

    with caplog.at_level(logging.INFO):
        _, summary, stats = asyncio.run(
            run_system(setup, tmp_path / "state", stores, tokens, during=during, device_kw={"device_id": "site"})
        )
    recs = records(tmp_path / "state", setup)
    assert summary["rounds_committed"] == 4 and recs[0]["failed"] == 1 and recs[0]["reported"] == 2
    assert stats[2].out_of_run  # the first process was told and stopped
    back = [r["round"] for r in recs if r["reported"] == 3]
    assert back and back == list(range(back[0], 5))  # from the round after it rejoined, every round
    assert restarted["stats"].reported >= len(back) and not restarted["stats"].out_of_run
    assert "site-2 [" in caplog.text and "rejoins the run (3 sites in it)" in caplog.text
