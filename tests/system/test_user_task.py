"""A user's task over the real server and devices (gRPC on loopback): the hospital example (a BinaryTask
on CSV files) trains, is scored with its own metrics (AUC), equals the simulator, writes its model; a
device runs only the task installed on it."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tests.system.harness import FAST, make_setup, records, run_system

from hamrah.core.params import max_abs_diff
from hamrah.device.fleet import make_tokens
from hamrah.experiments.config import from_dict
from hamrah.experiments.runner import prepare
from hamrah.experiments.serve import import_stores, installed_task, server_setup
from hamrah.server.config import server_config
from hamrah.simulation import SimulationConfig, Simulator, seeded

HOSPITAL = Path(__file__).resolve().parents[2] / "examples" / "hospital"


def hospital(rounds=2, partition="natural", num_clients=2, lr=0.1):
    return from_dict(
        {
            "task": {"entry": "hospital_task:Hospital", "kwargs": {"hidden": 16}},
            "data": {"partition": partition, "num_clients": num_clients},
            "algorithm": {"name": "fedavg", "client_fraction": 1.0, "local_epochs": 1, "batch_size": 16, "lr": lr},
            "run": {"rounds": rounds, "seed": 0},
        },
        HOSPITAL,
    )


def test_hospital_task_over_the_real_server_records_auc_and_exports_a_model_that_loads(tmp_path):
    exp = hospital(rounds=2)
    setup, stores, tokens = make_setup(tmp_path, exp, devices=2, goal_count=2, over_selection=1.0, min_reports=2)
    assert setup.model is None and setup.task_ref.name == "hospital" and not setup.task_ref.builtin
    assert setup.task_ref.digest == setup.task.digest() and '"name": "x0"' in setup.task_ref.schema
    task = installed_task(exp)
    server, summary, stats = asyncio.run(run_system(setup, tmp_path / "state", stores, tokens, task=task))
    recs = records(tmp_path / "state", setup)
    assert [r["round"] for r in recs] == [1, 2] and all(r["reported"] == 2 for r in recs)
    assert all(0.5 < r["test_auc"] <= 1.0 for r in recs)  # the task's own metric, on the server's test set
    assert summary["final_accuracy"] > 0.8
    assert all(s.reported == 2 and s.failed == 0 for s in stats)
    manifest = json.loads((tmp_path / "state" / "manifest.json").read_text())
    assert manifest["task"] == "hospital" and manifest["task_digest"] == task.digest()
    assert manifest["metrics"]["auc"] == pytest.approx(recs[-1]["test_auc"])
    sys.path.insert(0, str(HOSPITAL))
    from hospital_task import Hospital  # the user's own module

    model = Hospital().model()
    model.load_state_dict(load_file(str(tmp_path / "state" / "model.safetensors")))
    assert max_abs_diff(dict(model.named_parameters()), server.coordinator.params) == 0.0


def test_server_round_equals_simulator_round_for_a_user_task(tmp_path):
    """Two devices holding the hospitals' records (under the task's schema) give the simulator's model."""
    exp = hospital(rounds=1)
    prep = prepare(exp)
    sim = Simulator(
        seeded(prep.model_factory, 0),
        prep.data,
        prep.algorithm,
        SimulationConfig(rounds=1, seed=0, batched=False, workers=1),
        task=prep.task,
    )
    setup, stores, tokens = make_setup(tmp_path, exp, devices=2, goal_count=2, over_selection=1.0, min_reports=2)
    server, _, _ = asyncio.run(
        run_system(setup, tmp_path / "state", stores, tokens, client_keys=[0, 1], task=installed_task(exp))
    )
    result = sim.run()
    assert max_abs_diff(server.coordinator.params, result.params) < 1e-5
    assert max_abs_diff(server.coordinator.params, dict(seeded(prep.model_factory, 0).named_parameters())) > 1e-3


OTHER = """
from hospital_task import Hospital


class Retrained(Hospital):
    version = "2"  # the same name, another version: another digest
"""

SILO = {**FAST, "mode": "cross_silo", "test_set": False, "site_eval_fraction": 0.2}


def test_a_device_with_another_task_or_none_is_refused_and_the_round_goes_on(tmp_path, caplog, monkeypatch):
    exp = hospital(rounds=2, partition="iid", num_clients=3)
    make_tokens(tmp_path / "tokens.txt", 3)
    setup = server_setup(exp, server_config({**SILO, "tokens_file": str(tmp_path / "tokens.txt")}))
    stores = import_stores(exp, tmp_path / "stores", [0, 1, 2])
    tokens = make_tokens(tmp_path / "tokens.txt", 3)
    (tmp_path / "other_task.py").write_text(OTHER)
    monkeypatch.syspath_prepend(str(tmp_path))
    from hamrah.task import load_task

    right, wrong = installed_task(exp), load_task("other_task:Retrained", {}, tmp_path)
    with caplog.at_level(logging.INFO):
        _, summary, stats = asyncio.run(
            run_system(
                setup, tmp_path / "state", stores, tokens, task=[right, wrong, None], device_kw={"device_id": "site"}
            )
        )
    recs = records(tmp_path / "state", setup)
    assert [r["round"] for r in recs] == [1, 2] and recs[0]["failed"] == 2 and recs[0]["reported"] == 1
    assert recs[1]["reported"] == 1 and recs[1]["selected"] == 1  # the two are out of the run
    assert all(r["eval_reported"] == 1 and 0.0 <= r["device_auc"] <= 1.0 for r in recs)  # task metrics merged
    assert "final_device_auc" in summary
    asks = f"the plan asks for task 'hospital' (digest {right.digest()})"
    mismatch = f"{asks}; this device has task 'hospital' (digest {wrong.digest()}) installed"
    missing = f"{asks}; this device has no task installed"
    for who, line in (("site-1", mismatch), ("site-2", missing)):
        device = [r.message for r in caplog.records if r.name == "hamrah.device" and line in r.message]
        server = [r.message for r in caplog.records if r.name == "hamrah.server" and line in r.message]
        assert any(m.startswith(f"device {who}: round 1: failed its task") for m in device), who
        assert any(f"device {who} [" in m and "failed its task" in m for m in server), who
    assert stats[1].out_of_run and stats[2].out_of_run and stats[0].reported == 3
    assert stats[1].tasks == 1 and stats[2].tasks == 1  # refused before training: nothing trained on
    assert torch.isfinite(torch.tensor(recs[-1]["train_loss"]))


def test_a_user_task_plan_names_the_task_and_reads_back(tmp_path):
    from hamrah.transport.plan import Plan, TaskRef

    ref = TaskRef("hospital", "1", "1-abc", False, '{"fields": []}')
    plan = Plan("train", 2, {"name": "fedavg"}, None, 0, None, {}, ref)
    d = json.loads(plan.to_json())
    assert d["version"] == 2 and d["model"] is None and d["task"]["digest"] == "1-abc"
    assert Plan.from_json(plan.to_json()) == plan
    from hamrah.core.errors import ProtocolError

    bad = dict(d, task=None)
    with pytest.raises(ProtocolError, match="no model and no user task"):
        Plan.from_json(json.dumps(bad).encode())


@pytest.mark.parametrize(("name", "sites"), [("credit", 3), ("intrusion", 4)])
def test_an_example_runs_over_the_real_server_unchanged(tmp_path, name, sites):
    """The example's own server config (its task, data and algorithm; one round here), one device per site."""
    from hamrah.experiments.serve import load_server_config

    exp, srv = load_server_config(HOSPITAL.parent / name / f"{name}_server.toml")
    exp = exp.replace("run", rounds=1)
    setup, stores, tokens = make_setup(tmp_path, exp, devices=sites, mode="cross_silo", sites=srv.sites)
    server, summary, stats = asyncio.run(
        run_system(setup, tmp_path / "state", stores, tokens, client_keys=list(range(sites)), task=installed_task(exp))
    )
    recs = records(tmp_path / "state", setup)
    assert [r["round"] for r in recs] == [1] and recs[0]["reported"] == sites
    assert all(s.failed == 0 for s in stats) and summary["final_accuracy"] > 0.5
    assert (tmp_path / "state" / "model.safetensors").is_file()


def test_a_user_task_under_secure_aggregation_commits_the_plain_model(tmp_path):
    """The hospital task, its records split over 4 devices, under SecAgg over gRPC: the server sees only
    the masked sum and commits the model a plain run commits (up to the 20-bit fixed point)."""
    plain_exp = hospital(rounds=1, partition="iid", num_clients=4)
    secure_exp = from_dict(
        {**plain_exp.to_dict(), "secure_aggregation": {"variant": "secagg", "clip": 0.5, "input_bits": 20}}, HOSPITAL
    )
    setup, stores, tokens = make_setup(tmp_path, plain_exp, devices=4, goal_count=4, over_selection=1.0, min_reports=4)
    plain, _, _ = asyncio.run(run_system(setup, tmp_path / "plain", stores, tokens, task=installed_task(plain_exp)))
    secure_setup, _, _ = make_setup(tmp_path, secure_exp, devices=4, goal_count=4, over_selection=1.0, min_reports=4)
    secure, summary, stats = asyncio.run(
        run_system(secure_setup, tmp_path / "secure", stores, tokens, task=installed_task(secure_exp))
    )
    (rec,) = records(tmp_path / "secure", secure_setup)
    assert rec["reported"] == 4 and rec["secagg_survivors"]["unmasking"] == 4 and 0.5 < rec["test_auc"] <= 1.0
    assert all(s.reported == 1 and s.failed == 0 for s in stats)
    assert max_abs_diff(secure.coordinator.params, plain.coordinator.params) < 1e-4
