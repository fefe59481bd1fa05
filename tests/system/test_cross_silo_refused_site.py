"""Cross-silo over real gRPC: a site whose updates are for another task's model has its report refused,
and is taken out of the run (logged, recorded, told at its next check-in) instead of being asked again
every round; the other sites go on."""

from __future__ import annotations

import asyncio
import logging

import torch
from tests.system.harness import FAST, experiment, records, run_system

from hamrah.device.compute import TaskJob
from hamrah.device.fleet import make_tokens
from hamrah.experiments.serve import import_stores, server_setup
from hamrah.server.config import server_config

SILO = {**FAST, "mode": "cross_silo", "selection_timeout_s": 30.0, "test_set": False, "site_eval_fraction": 0.2}


def test_a_site_sending_another_tasks_model_is_out_of_the_run_and_the_others_go_on(tmp_path, caplog, monkeypatch):
    run = TaskJob.run

    def site_2_has_another_task(self, plan, params, broadcast):  # the same 2NN on 5 input features
        n, metrics, update, state = run(self, plan, params, broadcast)
        if self.client_key == 2 and plan.kind == "train":
            update = {k: torch.zeros(*v.shape[:-1], 5) if v.dim() == 2 else v for k, v in update.items()}
        return n, metrics, update, state

    monkeypatch.setattr(TaskJob, "run", site_2_has_another_task)
    exp = experiment(rounds=3, num_clients=30, partition="iid")
    tokens = make_tokens(tmp_path / "tokens.txt", 3)
    setup = server_setup(exp, server_config({**SILO, "tokens_file": str(tmp_path / "tokens.txt")}))
    stores = import_stores(exp, tmp_path / "stores", [0, 1, 2])
    with caplog.at_level(logging.INFO):
        server, summary, stats = asyncio.run(
            run_system(setup, tmp_path / "state", stores, tokens, device_kw={"device_id": "site"})
        )
    recs = records(tmp_path / "state", setup)
    assert [r["round"] for r in recs] == [1, 2, 3] and summary["rounds_committed"] == 3
    assert recs[0]["failed"] == 1 and recs[0]["reported"] == 2  # round 1 goes on without it, at once
    assert all(r["selected"] == 2 and r["reported"] == 2 for r in recs[1:])  # and it is not asked again
    assert stats[2].tasks == 1 and stats[2].out_of_run and not stats[2].finished  # told at its next check-in
    assert "this site is out of the run" in stats[2].messages[-1] and "its report was refused" in stats[2].messages[-1]
    assert all(s.reported == 4 for s in stats[:2])  # three rounds and the final evaluation
    out = [
        r.message
        for r in caplog.records
        if r.name == "hamrah.server"
        and "device site-2 [" in r.message
        and "out of the run (2 sites remain)" in r.message
    ]
    assert len(out) == 1 and "its report was refused: update: " in out[0] and "shape" in out[0]
    assert list(server.coordinator.machine.out.values()) == [out[0].split("remain): ")[1]]
