"""Personalized FL between a real server and devices over gRPC: FedPer's personal layers stay in each
device's Example Store and never reach the server; Ditto's personal model is kept on the device."""

from __future__ import annotations

import asyncio

import pytest
import torch
from tests.system.harness import experiment, make_setup, records, run_system

from hamrah.device.site import holdout
from hamrah.device.store import ExampleStore
from hamrah.experiments.config import from_dict
from hamrah.experiments.runner import prepare
from hamrah.simulation import seeded
from hamrah.transport.plan import PERSONAL_KEY

ALGO = {"name": "fedavg", "client_fraction": 0.1, "local_epochs": 1, "batch_size": 10, "lr": 0.05}


def _personalized(method: dict, **more):
    exp = experiment(rounds=2, algorithm=ALGO)
    return from_dict({**exp.to_dict(), "personalization": method, **more})


def _scored_by_devices(tmp_path, setup) -> list[dict]:
    recs = records(tmp_path / "state", setup)
    for r in recs:  # every device that reported scored the global model and its own on its held-out examples
        assert r["personal_reported"] == r["reported"]
        assert 0 <= r["device_local_accuracy"] <= 1 and 0 <= r["device_personal_accuracy"] <= 1
    return recs


def _kept(stores) -> list[dict]:
    out = []
    for path in stores:
        with ExampleStore(path) as store:
            if store.client_state() is not None:
                out.append(store.client_state())
    return out


def test_fedper_devices_keep_their_layers_and_the_server_never_moves_them(tmp_path):
    setup, stores, tokens = make_setup(
        tmp_path,
        _personalized({"method": "fedper", "layers": ["fc3"]}),
        devices=6,
        goal_count=5,
        over_selection=1.0,
        min_reports=5,
    )
    initial = {k: v.detach().clone() for k, v in seeded(setup.model.build, 0).named_parameters()}  # the run's seed
    server, summary, _ = asyncio.run(run_system(setup, tmp_path / "state", stores, tokens))
    assert summary["rounds_committed"] == 2
    for k, v in server.coordinator.params.items():
        assert torch.equal(v, initial[k]) == k.startswith("fc3.")  # shared layers moved; the head never arrived
    _scored_by_devices(tmp_path, setup)
    kept = _kept(stores)
    assert len(kept) >= 5 and all(set(s) == {"fc3.weight", "fc3.bias"} for s in kept)
    assert all(not torch.equal(s["fc3.weight"], initial["fc3.weight"]) for s in kept)  # trained on the device


@pytest.mark.parametrize(
    "secure", [None, {"variant": "secagg", "clip": 0.5, "input_bits": 24}], ids=["plain", "secagg"]
)
def test_ditto_devices_keep_a_whole_personal_model_and_score_it(tmp_path, secure):
    more = {} if secure is None else {"secure_aggregation": secure}
    exp = _personalized({"method": "ditto", "lam": 0.5}, **more)
    setup, stores, tokens = make_setup(tmp_path, exp, devices=6, goal_count=5, over_selection=1.0, min_reports=5)
    assert setup.plan_extra == {PERSONAL_KEY: {"holdout": 0.2}}
    server, summary, _ = asyncio.run(run_system(setup, tmp_path / "state", stores, tokens))
    assert summary["rounds_committed"] == 2
    kept = _kept(stores)
    assert len(kept) >= 5 and all(s.keys() == server.coordinator.params.keys() for s in kept)
    recs = _scored_by_devices(tmp_path, setup)
    assert recs[-1]["device_personal_accuracy"] > recs[-1]["device_local_accuracy"]  # two digits per device


def test_a_device_holds_out_the_examples_the_simulator_holds_out_for_its_client(tmp_path):
    exp = _personalized({"method": "ditto"})
    _, stores, _ = make_setup(tmp_path, exp, devices=3)
    fed = prepare(exp).data  # the simulator's split: with_holdout(0.2, seed)
    for c, path in enumerate(stores):
        with ExampleStore(path) as store:
            held, rest = holdout(store.read_all(), 0.2, exp.run.seed, c)  # what the device does, client key c
        assert torch.equal(held.x, fed.holdout_data(c).x) and torch.equal(held.y, fed.holdout_data(c).y)
        assert torch.equal(rest.y, fed.client_data(c).y)
