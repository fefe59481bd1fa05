"""Simulator heterogeneity (work, stragglers, drop-out), stateful clients, attack hooks, new data sets."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from hamrah.algorithms import FedAvg, FedNova, FedProx, LocalSGD, Scaffold
from hamrah.core.errors import ConfigError
from hamrah.core.params import max_abs_diff
from hamrah.data import ArrayData, Dataset, federate
from hamrah.data.synthetic import synthetic
from hamrah.models import LogReg, TwoNN
from hamrah.simulation import SimulationConfig, Simulator, seeded
from hamrah.simulation.heterogeneity import Heterogeneity, draw_work


@pytest.fixture(scope="module")
def small(mnist):
    return Dataset(
        "m", ArrayData(mnist.train.x[:600], mnist.train.y[:600]), ArrayData(mnist.test.x[:200], mnist.test.y[:200]), 10
    )


def _sim(fed, algo, model=LogReg, **kw):
    return Simulator(seeded(model, 0), fed, algo, SimulationConfig(rounds=2, seed=0, **kw))


def test_draw_work_epochs_stragglers_dropout():
    rng = np.random.default_rng(0)
    work = draw_work(
        Heterogeneity(epochs=(2, 5), straggler_fraction=0.5, dropout=0.2), LocalSGD(3, 10, 0.1), [50] * 40, rng
    )
    assert sum(w.straggler for w in work) == 20
    assert 0 < sum(w.dropped for w in work) < 40
    assert {w.plan.epochs for w in work if not w.straggler} <= {2, 3, 4, 5}
    assert len({w.plan.epochs for w in work if not w.straggler}) > 1


def test_fedavg_drops_stragglers_fedprox_keeps_them(small):
    fed = federate(small, "iid", 10, seed=0)
    het = Heterogeneity(straggler_fraction=0.5)
    plan = LocalSGD(3, 10, 0.1)
    avg = _sim(fed, FedAvg(1.0, plan), heterogeneity=het).train_round(1)
    prox = _sim(fed, FedProx(1.0, plan, mu=0.0), heterogeneity=het).train_round(1)
    assert sum(r.error == "straggler" for r in avg) == 5
    assert all(r.error is None for r in prox)
    steps = sorted(r.metrics["local_steps"] for r in prox)
    assert steps[0] < 18 and steps[-1] == 18  # stragglers ran fewer than E * 6 steps


def test_dropout_failures_are_values_and_run_survives(small):
    fed = federate(small, "iid", 10, seed=0)
    sim = _sim(fed, FedAvg(1.0, LocalSGD(1, 20, 0.1)), heterogeneity=Heterogeneity(dropout=0.5))
    res = sim.train_round(1)
    assert 0 < sum(r.error == "dropped" for r in res) < 10
    hist = sim.run().history
    assert hist[-1].clients < 10


def test_batched_equals_sequential_with_heterogeneous_epochs(small):
    fed = federate(small, "unbalanced", 6, seed=1)
    het = Heterogeneity(epochs=(1, 3))
    algo = FedAvg(1.0, LocalSGD(1, 16, 0.1))
    a = _sim(fed, algo, TwoNN, heterogeneity=het, batched=True, workers=1).run()
    b = _sim(fed, algo, TwoNN, heterogeneity=het, batched=False, workers=1).run()
    assert max_abs_diff(a.params, b.params) < 1e-4


def test_batched_refused_for_non_plain_sgd(small):
    fed = federate(small, "iid", 4, seed=0)
    heavy = FedAvg(1.0, LocalSGD(1, 10, 0.1, momentum=0.9))
    with pytest.raises(ConfigError, match="batched.*fedavg changes local SGD beyond a proximal term"):
        _sim(fed, heavy, batched=True)
    assert not _sim(fed, heavy).batched
    assert _sim(fed, FedProx(1.0, LocalSGD(1, 10, 0.1), mu=0.5)).batched  # FedProx's pull: batched


class _TwoNNAutograd(TwoNN):
    """TwoNN without the hand-written MLP step: the batched trainer's autograd step."""

    mlp_layers = None


@pytest.mark.parametrize("model", [TwoNN, _TwoNNAutograd], ids=["mlp-step", "autograd-step"])
@pytest.mark.parametrize(
    "algo", [FedProx(1.0, LocalSGD(2, 10, 0.1), mu=0.5), FedNova(1.0, LocalSGD(2, 10, 0.1), mu=0.5)]
)
def test_fedprox_and_fednova_batched_equal_sequential(small, algo, model):
    """The proximal pull in the batched trainer: the same models as the one-client-at-a-time trainer,
    with unequal local work (heterogeneous epochs: a client that has finished is not pulled further;
    FedNova's normalisation sees each client's steps)."""
    fed = federate(small, "iid", 4, seed=0)
    het = Heterogeneity(epochs=(1, 3))
    a = _sim(fed, algo, model, heterogeneity=het, batched=True, workers=1).run()
    b = _sim(fed, algo, model, heterogeneity=het, batched=False, workers=1).run()
    assert max_abs_diff(a.params, b.params) < 1e-4
    c = _sim(fed, FedAvg(1.0, LocalSGD(2, 10, 0.1)), TwoNN, heterogeneity=het, batched=True, workers=1).run()
    assert max_abs_diff(a.params, c.params) > 1e-3  # the pull moved the models


def test_scaffold_keeps_client_state_between_rounds(small):
    fed = federate(small, "iid", 4, seed=0)
    sim = _sim(fed, Scaffold(0.5, LocalSGD(1, 20, 0.1), num_clients=4), workers=1)
    sim.run()
    assert len(sim.client_states) >= 2
    assert max(float(v.abs().max()) for v in sim.server_state.c.values()) > 0


class _Attack:
    def __init__(self):
        self.calls = []

    def is_malicious(self, cid):
        return cid == 0

    def poison_data(self, cid, data, rng):
        self.calls.append(("data", cid))
        return ArrayData(data.x, (data.y + 1) % 10)

    def poison_updates(self, malicious, benign, rng):
        self.calls.append(("updates", [r.client_id for r in malicious], len(benign)))
        return [dataclasses.replace(r, delta={k: -10 * v for k, v in r.delta.items()}) for r in malicious]


def test_attack_hooks_are_applied(small):
    fed = federate(small, "iid", 3, seed=0)
    attack = _Attack()
    sim = Simulator(
        seeded(LogReg, 0), fed, FedAvg(1.0, LocalSGD(1, 20, 0.1)), SimulationConfig(rounds=1), attack=attack
    )
    clean = _sim(fed, FedAvg(1.0, LocalSGD(1, 20, 0.1)), workers=1)
    sim.run(), clean.run()
    assert ("data", 0) in attack.calls and ("updates", [0], 2) in attack.calls
    assert max_abs_diff(sim.params, clean.params) > 1e-3


def test_synthetic_generator_shape_and_determinism():
    a, b = synthetic(1.0, 1.0), synthetic(1.0, 1.0)
    assert a.train.x.shape[1] == 60 and a.num_classes == 10
    assert len(np.unique(a.train_groups)) == 30 and (a.train.x == b.train.x).all()
    sizes = np.array(a.info["sizes"])
    assert sizes.min() >= 50 and sizes.max() > 3 * np.median(sizes)  # power-law-like sizes
    assert not (synthetic(0.0, 0.0).train.x[:10] == a.train.x[:10]).all()
    with pytest.raises(ConfigError):
        synthetic(-1.0, 1.0)


def test_rounds_too_small_for_a_robust_rule_are_counted_as_skipped(small, caplog):
    # Krum with f = 1 needs 2f + 3 = 5 reports: with half the cohort of 5 dropping out, most rounds have
    # fewer; each is skipped (the model kept), counted and logged, not silently recorded as a round.
    from hamrah.aggregation import build_aggregator

    fed = federate(small, "iid", 5, seed=0)
    sim = Simulator(
        seeded(LogReg, 0),
        fed,
        FedAvg(1.0, LocalSGD(1, 20, 0.1)),
        SimulationConfig(rounds=4, seed=0, heterogeneity=Heterogeneity(dropout=0.5)),
        aggregator=build_aggregator(name="krum", f=1),
    )
    result = sim.run()
    assert [h.clients for h in result.history] == [0, 0, 0, 0] and sim.skipped_rounds == 4  # none had 5 reports
    assert max_abs_diff(result.params, dict(seeded(LogReg, 0).named_parameters())) == 0.0  # the model kept
    assert caplog.text.count("the round is skipped, the model kept") == sim.skipped_rounds
