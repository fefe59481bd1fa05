"""Personalized FL between a real server and devices over gRPC: FedPer's personal layers stay in each
device's Example Store and never reach the server; Ditto's personal model is kept on the device."""

from __future__ import annotations

import asyncio

import torch
from tests.system.harness import experiment, make_setup, run_system

from hamrah.device.store import ExampleStore
from hamrah.experiments.config import from_dict
from hamrah.simulation import seeded

ALGO = {"name": "fedavg", "client_fraction": 0.1, "local_epochs": 1, "batch_size": 10, "lr": 0.05}


def _personalized(method: dict):
    exp = experiment(rounds=2, algorithm=ALGO)
    return from_dict({**exp.to_dict(), "personalization": method})


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
    kept = _kept(stores)
    assert len(kept) >= 5 and all(set(s) == {"fc3.weight", "fc3.bias"} for s in kept)
    assert all(not torch.equal(s["fc3.weight"], initial["fc3.weight"]) for s in kept)  # trained on the device


def test_ditto_devices_keep_a_whole_personal_model(tmp_path):
    setup, stores, tokens = make_setup(
        tmp_path,
        _personalized({"method": "ditto", "lam": 0.5}),
        devices=6,
        goal_count=5,
        over_selection=1.0,
        min_reports=5,
    )
    server, summary, _ = asyncio.run(run_system(setup, tmp_path / "state", stores, tokens))
    assert summary["rounds_committed"] == 2
    kept = _kept(stores)
    assert len(kept) >= 5 and all(s.keys() == server.coordinator.params.keys() for s in kept)
