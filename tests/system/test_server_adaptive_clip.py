"""Adaptive clipping (Andrew et al. 2021) over the real server: the clip norm travels to devices in the
plan, their clipped bits come back inside the payload, the server moves the norm after each round and
keeps it in the state database (committed with the round), so a restarted server continues from the same norm."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sqlite3

import pytest
import torch
from tests.system.harness import make_setup, records, run_system

from hamrah.core.errors import ConfigError, DataError
from hamrah.core.pipeline import DensePayload
from hamrah.device.pipeline import STATE_KEY, encode_update
from hamrah.experiments.config import from_dict
from hamrah.pipeline import PipelineSpec
from hamrah.server.app import FLServer

CLIP0 = 0.01  # far below logreg's update norms: every client is clipped, so the norm must grow


def _experiment(rounds):
    return from_dict(
        {
            "data": {"dataset": "mnist", "partition": "iid", "num_clients": 20},
            "model": {"name": "logreg"},
            "algorithm": {"name": "fedavg", "client_fraction": 0.2, "local_epochs": 1, "batch_size": 50, "lr": 0.1},
            "run": {"rounds": rounds, "seed": 0},
            "privacy": {
                "mode": "central",
                "clip": CLIP0,
                "noise_multiplier": 0.1,
                "sampling": "fixed",
                "adaptive": True,
                "target_quantile": 0.5,
                "clip_learning_rate": 0.5,
                "clip_count_stddev": 0.1,
            },
        }
    )


def test_the_clip_norm_moves_across_rounds_and_survives_a_restart(tmp_path):
    setup, stores, tokens = make_setup(tmp_path, _experiment(2), devices=5, goal_count=4, min_reports=4)
    state = tmp_path / "state"
    asyncio.run(run_system(setup, state, stores, tokens))
    recs = records(state, setup)
    clips = [r["pipeline_state"]["dp_clip"]["clip"] for r in recs]
    # every update is clipped (b ~ 0 +- 0.025), so each round multiplies the norm by about exp(0.25)
    assert [r["round"] for r in recs] == [1, 2]
    assert CLIP0 * 1.15 < clips[0] < clips[1] < CLIP0 * 1.8
    saved = _row(state, "pipeline_state")["stages"]
    assert saved["dp_clip"] == {"clip": clips[1], "rounds": 2} and saved["dp_noise"]["clip"] == clips[1]

    # restart with one more round: the server resumes at the saved norm and broadcasts it
    setup3, _, _ = make_setup(tmp_path, _experiment(3), devices=5, goal_count=4, min_reports=4)
    setup3 = dataclasses.replace(setup3, config=setup.config | {"run": setup3.config["run"]})
    server = FLServer(setup3, state)
    try:
        pipe = server.coordinator.pipeline
        assert pipe.plan_extra()[STATE_KEY] == {"dp_clip": {"clip": clips[1], "rounds": 2}}
    finally:
        server.store.close()
    asyncio.run(run_system(setup3, state, stores, tokens))
    recs = records(state, setup3)
    assert [r["round"] for r in recs] == [1, 2, 3]
    assert clips[1] * 1.05 < recs[2]["pipeline_state"]["dp_clip"]["clip"] < clips[1] * 1.5


def _row(state, key):
    with sqlite3.connect(state / "state.db") as db:
        return json.loads(db.execute("SELECT value FROM privacy WHERE key = ?", (key,)).fetchone()[0])


def _spec():
    from hamrah.experiments.config import pipeline_spec

    return pipeline_spec(_experiment(1), 20)


def _decode(spec: PipelineSpec, data: bytes):
    chain = spec.chain()
    from hamrah.core.pipeline import wire_spec

    template = {"w": torch.zeros(3)}
    payload = chain.wire_stage().read(data, wire_spec(chain, template))
    assert isinstance(payload, DensePayload)
    return payload.params


def test_the_device_clips_to_the_broadcast_norm_and_reports_its_bit():
    spec = _spec()
    update = {"w": torch.tensor([3.0, 4.0, 0.0])}  # norm 5
    extra = {"pipeline": spec.to_json()}
    small = _decode(
        spec, encode_update({**extra, STATE_KEY: {"dp_clip": {"clip": 1.0, "rounds": 3}}}, update, 1, 1, {})
    )
    assert torch.allclose(small["w"], torch.tensor([0.6, 0.8, 0.0])) and float(small["dp_clip:unclipped"]) == -0.5
    large = _decode(
        spec, encode_update({**extra, STATE_KEY: {"dp_clip": {"clip": 10.0, "rounds": 3}}}, update, 1, 1, {})
    )
    assert torch.equal(large["w"], update["w"]) and float(large["dp_clip:unclipped"]) == 0.5
    initial = _decode(spec, encode_update(extra, update, 1, 1, {}))  # no broadcast: the configured initial norm
    assert float(initial["w"].norm()) == pytest.approx(CLIP0, rel=1e-5)
    for bad in ({"dp_clip": {"clip": -1.0}}, {"dp_clip": {"clip": "big"}}, {"nope": {"clip": 1.0}}):
        with pytest.raises(ConfigError, match="pipeline server state"):
            encode_update({**extra, STATE_KEY: bad}, update, 1, 1, {})


def test_a_corrupt_stage_state_is_refused_on_start(tmp_path):
    setup, _, _ = make_setup(tmp_path, _experiment(1), devices=0, goal_count=4)
    state = tmp_path / "state"
    FLServer(setup, state).store.close()  # creates state.db
    with sqlite3.connect(state / "state.db") as db:
        db.execute("CREATE TABLE IF NOT EXISTS privacy (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        db.execute("INSERT INTO privacy VALUES ('pipeline_state', ?)", ('{"stages": {"dp_clip": {"clip": "x"}}}',))
    with pytest.raises(DataError, match="cannot restore the pipeline's server state"):
        FLServer(setup, state)
