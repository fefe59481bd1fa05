"""Personalized runs in the simulator: each client's held-out examples, its own model scored on them,
and what the global model never receives."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hamrah.algorithms import FedAvg, LocalSGD
from hamrah.algorithms.personal import Ditto, FedPer, Personalized
from hamrah.core.errors import ConfigError
from hamrah.data import ArrayData, Dataset, FederatedDataset, federate
from hamrah.data.federated import split_holdout
from hamrah.experiments.config import from_dict
from hamrah.experiments.runner import run_experiment
from hamrah.models import TwoNN
from hamrah.simulation import SimulationConfig, Simulator, seeded

PLAN = LocalSGD(epochs=1, batch_size=10, lr=0.05)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(0, 400), fraction=st.floats(0.01, 0.99), seed=st.integers(0, 2**20), key=st.integers(0, 10**6))
def test_a_holdout_splits_a_clients_examples_in_two(n, fraction, seed, key):
    held, kept = split_holdout(n, fraction, seed, key)
    assert sorted([*held, *kept]) == list(range(n))  # every example once, in one part
    assert len(held) == (0 if n < 2 else min(max(int(fraction * n), 1), n - 1))
    again = split_holdout(n, fraction, seed, key)
    assert np.array_equal(held, again[0]) and np.array_equal(kept, again[1])  # the same every round


@pytest.fixture(scope="module")
def shards(mnist):
    ds = Dataset(
        "mnist_small",
        ArrayData(mnist.train.x[:3000], mnist.train.y[:3000]),
        ArrayData(mnist.test.x[:500], mnist.test.y[:500]),
        num_classes=10,
    )
    return federate(ds, "shards", 20, seed=0).with_holdout(0.25, seed=0)


def test_with_holdout_trains_on_the_rest_and_is_refused_twice(shards):
    for c in range(shards.num_clients):
        train, held = set(shards.client_indices[c]), set(shards.client_holdout[c])
        assert held and train and not train & held
        assert len(shards.holdout_data(c)) == len(held)
    with pytest.raises(ConfigError, match="already split"):
        shards.with_holdout(0.1, 0)
    with pytest.raises(ConfigError, match=r"personalization.holdout = 1.5: expected a number in \(0, 1\)"):
        FederatedDataset(shards.dataset, shards.client_indices, "x").with_holdout(1.5, 0)


def _run(fed, algorithm, rounds=6, **kw):
    sim = Simulator(seeded(TwoNN, 0), fed, algorithm, SimulationConfig(rounds=rounds, eval_every=rounds, seed=0), **kw)
    return sim, sim.run()


def test_ditto_personal_models_beat_the_global_model_on_non_iid_clients(shards):
    sim, result = _run(shards, Personalized(FedAvg(0.5, PLAN), Ditto(0.1)))
    last = result.history[-1].extra
    assert last["personal_accuracy"] > last["local_accuracy"] + 0.1  # two labels per client
    assert 0.0 <= last["personal_accuracy_p10"] <= last["personal_accuracy"]
    assert len(sim.client_states) > 10 and all(s.keys() == sim.params.keys() for s in sim.client_states.values())


def test_fedper_global_model_keeps_its_initial_personal_layers(shards):
    init = {k: v.detach().clone() for k, v in seeded(TwoNN, 0).named_parameters()}
    sim, result = _run(shards, Personalized(FedAvg(0.5, PLAN), FedPer(("fc3",))), rounds=3)
    for k, v in sim.params.items():
        assert torch.equal(v, init[k]) == k.startswith("fc3.")  # the shared layers moved, the head never did
    assert "personal_accuracy" in result.history[-1].extra


def test_finetune_scores_the_global_model_after_one_local_run(shards):
    _, result = _run(shards, FedAvg(0.5, PLAN), finetune=True)
    last = result.history[-1].extra
    assert last["personal_accuracy"] > last["local_accuracy"]
    with pytest.raises(ConfigError, match="no client holds out examples"):
        Simulator(
            TwoNN(), federate(shards.dataset, "iid", 5, seed=0), FedAvg(0.5, PLAN), SimulationConfig(1), finetune=True
        )
    with pytest.raises(ConfigError, match="finetune with ditto"):
        Simulator(TwoNN(), shards, Personalized(FedAvg(0.5, PLAN), Ditto()), SimulationConfig(1), finetune=True)
    with pytest.raises(ConfigError, match=r"\['head'\] name no parameter"):
        Simulator(TwoNN(), shards, Personalized(FedAvg(0.5, PLAN), FedPer(("head",))), SimulationConfig(1))


def test_without_a_holdout_no_client_metrics_are_recorded(shards):
    plain = federate(shards.dataset, "iid", 5, seed=0)
    _, result = _run(plain, FedAvg(1.0, PLAN), rounds=1)
    assert not any(k.startswith(("local_", "personal_")) for k in result.history[-1].extra)


def test_a_config_runs_personalized_and_refuses_mistakes(tmp_path):
    raw = {
        "data": {"dataset": "mnist", "partition": "shards", "num_clients": 100},
        "algorithm": {"name": "fedavg", "client_fraction": 0.05, "lr": 0.05},
        "run": {"rounds": 2, "eval_every": 2},
        "personalization": {"method": "fedper", "layers": ["fc3"], "holdout": 0.2},
    }
    summary = run_experiment(from_dict(raw), tmp_path / "run", plot=False)
    assert 0 <= summary["final_personal_accuracy"] <= 1 and 0 <= summary["final_local_accuracy"] <= 1
    bad = [
        ({"method": "fedper"}, "parameter-name prefixes"),
        ({"method": "ditto", "lam": -1}, "personalization.lam"),
        ({"method": "finetune", "lam": 0.1}, 'unset with method = "finetune"'),
        ({"method": "ditto", "holdout": 1.0}, "personalization.holdout"),
        ({"method": "maml"}, "expected one of ditto, fedper, finetune"),
    ]
    for section, message in bad:
        with pytest.raises(ConfigError, match=message):
            from_dict({**raw, "personalization": section})
    with pytest.raises(ConfigError, match="SCAFFOLD"):
        from_dict({**raw, "algorithm": {"name": "scaffold"}, "personalization": {"method": "ditto"}})


def test_under_an_attack_only_honest_clients_are_scored(shards):
    from hamrah.attacks import build_attack
    from hamrah.simulation.personal import personal_metrics
    from hamrah.task import DEFAULT_TASK

    honest = 3
    attack = build_attack("gaussian", frozenset(range(shards.num_clients)) - {honest})
    sim, result = _run(shards, FedAvg(0.5, PLAN), rounds=1, attack=attack)
    alone = personal_metrics(sim.model, shards, sim.algorithm, sim.params, {}, DEFAULT_TASK, skip=attack.malicious)
    assert result.history[-1].extra["local_accuracy"] == alone["local_accuracy"]
    assert alone["local_accuracy"] == alone["local_accuracy_p10"]  # one client scored


@pytest.mark.parametrize("method", [Ditto(0.3), FedPer(("fc3",))], ids=["ditto", "fedper"])
def test_the_batched_trainer_gives_the_sequential_personal_models(shards, method):
    """Two rounds batched and two one client at a time: the same global model and the same personal
    part of every client, up to float rounding (the products are summed in another order; a rounding
    difference can flip a ReLU sitting at 0, which moved one FedPer client's update by 7e-4)."""
    from hamrah.core.params import max_abs_diff

    algorithm = Personalized(FedAvg(0.5, PLAN), method)
    runs = []
    for batched in (True, False):
        cfg = SimulationConfig(rounds=2, eval_every=2, seed=0, batched=batched, workers=1)
        sim = Simulator(seeded(TwoNN, 0), shards, algorithm, cfg)
        runs.append((sim, sim.run()))
    (fast, a), (slow, b) = runs
    assert fast.batched and not slow.batched
    assert max_abs_diff(fast.params, slow.params) < 1e-3
    assert fast.client_states.keys() == slow.client_states.keys() and len(fast.client_states) >= 10
    assert all(max_abs_diff(fast.client_states[c], slow.client_states[c]) < 1e-3 for c in fast.client_states)
    assert a.history[-1].extra["personal_accuracy"] == pytest.approx(b.history[-1].extra["personal_accuracy"], abs=1e-3)


def test_a_clients_own_model_comes_out_of_a_personalized_run(tmp_path):
    """personal_model: FedPer's client = the global model with its own last layer; one that never
    trained keeps the global model's (never averaged) personal layer; a plain run is refused."""
    from hamrah.experiments.export import read_checkpoint
    from hamrah.experiments.personal import personal_model

    raw = {
        "data": {"dataset": "mnist", "partition": "shards", "num_clients": 100},
        "algorithm": {"name": "fedavg", "client_fraction": 0.05, "lr": 0.05},
        "run": {"rounds": 2, "eval_every": 2},
        "personalization": {"method": "fedper", "layers": ["fc3"], "holdout": 0.2},
    }
    cfg = from_dict(raw)
    run_experiment(cfg, tmp_path / "run", plot=False)
    tensors, _ = read_checkpoint(tmp_path / "run", cfg.to_dict())
    trained = sorted({int(k.split("/")[1]) for k in tensors if k.startswith("client/")})
    idle = next(c for c in range(100) if c not in trained)
    model, round_ = personal_model(tmp_path / "run", cfg, trained[0])
    own = dict(model.named_parameters())
    assert round_ == 2
    torch.testing.assert_close(own["fc3.weight"], tensors[f"client/{trained[0]}/fc3.weight"], rtol=0, atol=0)
    torch.testing.assert_close(own["fc1.weight"], tensors["params/fc1.weight"], rtol=0, atol=0)
    untouched = dict(personal_model(tmp_path / "run", cfg, idle)[0].named_parameters())
    torch.testing.assert_close(untouched["fc3.weight"], tensors["params/fc3.weight"], rtol=0, atol=0)
    assert not torch.equal(untouched["fc3.weight"], own["fc3.weight"])
    with pytest.raises(ConfigError, match="client 100: the run has clients 0..99"):
        personal_model(tmp_path / "run", cfg, 100)
    plain = from_dict({k: v for k, v in raw.items() if k != "personalization"})
    with pytest.raises(ConfigError, match="the run is not personalized"):
        personal_model(tmp_path / "run", plain, 0)
