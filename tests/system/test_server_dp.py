"""The real server's privacy claims: no sampling-based epsilon, DP-FTRL's once-per-tree rule, and a budget
kept in state.db with the checkpoints (it cannot be reset by deleting a file)."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest
import torch
from tests.system.harness import make_setup, records, run_system

from hamrah.algorithms import DELTA
from hamrah.core.aggregate import aggregate_contributions
from hamrah.core.errors import ConfigError, DataError, ProtocolError
from hamrah.device.pipeline import encode_update
from hamrah.experiments.config import from_dict
from hamrah.privacy import RoundSpec, epsilon_of
from hamrah.server.app import FLServer
from hamrah.server.pipeline import ServerPipeline


def _experiment(privacy, rounds=2):
    return from_dict(
        {
            "data": {"dataset": "mnist", "partition": "iid", "num_clients": 20},
            "model": {"name": "logreg"},
            "algorithm": {"name": "fedavg", "client_fraction": 0.2, "local_epochs": 1, "batch_size": 50, "lr": 0.1},
            "run": {"rounds": rounds, "seed": 0},
            "privacy": privacy,
        }
    )


FTRL = {"mode": "ftrl", "clip": 0.5, "noise_multiplier": 2.0, "tree_rounds": 1}


def test_a_sampling_based_budget_is_refused_on_the_server(tmp_path):
    central = {"mode": "central", "clip": 0.5, "noise_multiplier": 1.0, "sampling": "poisson", "target_epsilon": 10.0}
    setup, _, _ = make_setup(tmp_path, _experiment(central), devices=0, goal_count=4)
    with pytest.raises(ConfigError, match='would not be a guarantee; expected privacy.mode = "ftrl"'):
        FLServer(setup, tmp_path / "state")


def test_dp_ftrl_reports_its_epsilon_and_the_ledger_cannot_be_dropped_apart_from_the_checkpoints(tmp_path):
    setup, stores, tokens = make_setup(tmp_path, _experiment(FTRL), devices=6, goal_count=4, min_reports=4)
    state = tmp_path / "state"
    asyncio.run(run_system(setup, state, stores, tokens))
    recs = records(state, setup)
    want = [epsilon_of([(RoundSpec.tree(2.0, 1), n)], 1e-5) for n in (1, 2)]
    assert [r["epsilon"] for r in recs] == pytest.approx(want, rel=1e-9)

    with sqlite3.connect(state / "state.db") as db:  # the ledger row alone gone: refused, not a fresh budget
        db.execute("DELETE FROM privacy WHERE key = 'ledger'")
    with pytest.raises(DataError, match="checkpoints but no privacy ledger"):
        FLServer(setup, state)

    (state / "state.db").unlink()  # the whole database gone, checkpoint files left: refused too
    with pytest.raises(DataError, match="checkpoints but no privacy ledger"):
        FLServer(setup, state)


def test_central_noise_without_a_budget_runs_but_claims_no_epsilon(tmp_path):
    central = {"mode": "central", "clip": 0.5, "noise_multiplier": 1.0, "sampling": "fixed"}
    setup, stores, tokens = make_setup(tmp_path, _experiment(central, rounds=1), devices=5, goal_count=4, min_reports=4)
    asyncio.run(run_system(setup, tmp_path / "state", stores, tokens))
    (rec,) = records(tmp_path / "state", setup)
    assert "epsilon" not in rec and rec["reported"] == 4


def _pipeline(tmp_path, tree_rounds):
    exp = _experiment({**FTRL, "tree_rounds": tree_rounds}, rounds=4)
    setup, _, _ = make_setup(tmp_path, exp, devices=0, goal_count=2)
    params = {"w": torch.zeros(10, 784), "b": torch.zeros(10)}
    return ServerPipeline.from_config(setup.config, params, setup.goal, tmp_path, "fedavg"), params


def _report(pipe, params, client):
    update = {"delta/" + k: torch.ones_like(v) for k, v in params.items()}
    tensors = encode_update(pipe.plan_extra(), update, client, 1, {})
    return pipe.decode_result(client, tensors, 10, {})


def _commit(pipe, results, round_idx):
    """What the Coordinator does with a round's reports: the server halves on their mean, then the record."""
    pipe.server_half(aggregate_contributions(results, (DELTA,)), [], round_idx, len(results))
    return pipe.record_round()


def test_a_second_report_of_one_device_within_a_tree_is_refused(tmp_path):
    pipe, params = _pipeline(tmp_path, tree_rounds=2)
    pipe.start_round(1)
    first = _report(pipe, params, 7)
    with pytest.raises(ProtocolError, match="already contributed to DP-FTRL tree 0"):
        _report(pipe, params, 7)  # twice in one round
    _commit(pipe, [first], 1)
    pipe.start_round(2)
    with pytest.raises(ProtocolError, match="at most one report per device per tree"):
        _report(pipe, params, 7)  # round 2 is still tree 0
    rec = _commit(pipe, [_report(pipe, params, 8)], 2)
    assert rec["epsilon"] == pytest.approx(epsilon_of([(RoundSpec.tree(2.0, 2), 2)], 1e-5))
    pipe.start_round(3)  # tree 1: both may come back
    _report(pipe, params, 7)
    _report(pipe, params, 8)


def test_an_abandoned_attempt_neither_advances_the_tree_nor_uses_up_its_devices(tmp_path):
    pipe, params = _pipeline(tmp_path, tree_rounds=2)
    pipe.start_round(1)
    result = _report(pipe, params, 7)
    pipe.server_half(aggregate_contributions([result], (DELTA,)), [], 1, 1)  # noise drawn, tree position 1 ...
    pipe.start_round(1)  # ... but the attempt was abandoned: retried from the committed state
    assert pipe.run.server_state[-1].rounds == 0
    _report(pipe, params, 7)  # device 7's report of the abandoned attempt was never released
