"""The update pipeline over the real server: devices encode (clip + 8-bit quantization), the server
decodes, noises the mean (DP-FTRL: an epsilon the server can prove), records epsilon and keeps the budget
(in state.db, with the checkpoints) across a restart."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sqlite3

import pytest
from tests.system.harness import make_setup, records, run_system

from hamrah.core.errors import ConfigError
from hamrah.experiments.config import from_dict


def _experiment(rounds, target_epsilon=None):
    privacy = {"mode": "ftrl", "clip": 0.5, "noise_multiplier": 1.0, "tree_rounds": 1}
    if target_epsilon is not None:
        privacy["target_epsilon"] = target_epsilon
    return from_dict(
        {
            "data": {"dataset": "mnist", "partition": "iid", "num_clients": 20},
            "model": {"name": "logreg"},
            "algorithm": {"name": "fedavg", "client_fraction": 0.2, "local_epochs": 1, "batch_size": 50, "lr": 0.1},
            "run": {"rounds": rounds, "seed": 0},
            "compression": {"codec": "quantize", "bits": 8},
            "privacy": privacy,
        }
    )


def _ledger(state):
    with sqlite3.connect(state / "state.db") as db:
        return json.loads(db.execute("SELECT value FROM privacy WHERE key = 'ledger'").fetchone()[0])


def test_central_dp_with_quantization_commits_rounds_and_keeps_epsilon_across_a_restart(tmp_path):
    exp = _experiment(rounds=2, target_epsilon=100.0)
    setup, stores, tokens = make_setup(tmp_path, exp, devices=6, goal_count=4, min_reports=4)
    state = tmp_path / "state"
    asyncio.run(run_system(setup, state, stores, tokens))
    recs = records(state, setup)
    assert [r["round"] for r in recs] == [1, 2]
    eps = [r["epsilon"] for r in recs]
    assert 0 < eps[0] < eps[1]
    assert all(0 < r["bytes_up"] < 4 * 4 * 7850 / 3 for r in recs)  # 8-bit codes, not float32
    ledger = _ledger(state)
    assert ledger["rounds_done"] == 2 and ledger["spent_epsilon"] == pytest.approx(eps[1])

    # a restart from the same state with one more round: the ledger resumes at the spent epsilon
    exp3 = _experiment(rounds=3, target_epsilon=100.0)
    setup3, _, _ = make_setup(tmp_path, exp3, devices=6, goal_count=4, min_reports=4)
    setup3 = dataclasses.replace(setup3, config=setup.config | {"run": setup3.config["run"]})
    asyncio.run(run_system(setup3, state, stores, tokens))
    recs = records(state, setup3)
    assert [r["round"] for r in recs] == [1, 2, 3]
    assert recs[2]["epsilon"] > eps[1]
    assert _ledger(state)["rounds_done"] == 3


def test_a_restart_that_cannot_fit_the_spent_budget_is_refused(tmp_path):
    exp = _experiment(rounds=1, target_epsilon=100.0)
    setup, stores, tokens = make_setup(tmp_path, exp, devices=6, goal_count=4, min_reports=4)
    state = tmp_path / "state"
    asyncio.run(run_system(setup, state, stores, tokens))
    spent = _ledger(state)["spent_epsilon"]
    from hamrah.server.app import FLServer

    # the same budget, more rounds than are left after the one spent: refused before serving
    many = dataclasses.replace(setup, run=dataclasses.replace(setup.run, rounds=110))  # 105 fit from scratch
    with pytest.raises(ConfigError, match=r"already spent [0-9.]+ in 1 rounds"):
        FLServer(many, state)
    assert spent > 0
