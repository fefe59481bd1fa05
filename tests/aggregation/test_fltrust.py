"""FLTrust: hand-computed trust scores and rescaling, planted outliers, refusals, and the simulator's
root-set reference update."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hamrah.aggregation import FLTrust, build_aggregator, fltrust_combine, trust_scores
from hamrah.algorithms import FedAvg, FedNova, LocalSGD, client_update
from hamrah.core.errors import ConfigError
from hamrah.data import ArrayData, Dataset, FederatedDataset
from hamrah.models import LogReg
from hamrah.simulation import SimulationConfig, Simulator, seeded
from hamrah.simulation.reference import RootReference


def _w(*rows):
    return [{"w": torch.tensor(r, dtype=torch.float32)} for r in rows]


def test_hand_computed_scores_rescaling_and_mean():
    ref = torch.tensor([1.0, 0.0])
    x = torch.tensor([[3.0, 0.0], [-5.0, 0.0], [1.0, 1.0], [0.0, 2.0]])
    # cos = 1, -1, 1/sqrt(2), 0 -> ReLU
    assert torch.allclose(trust_scores(x, ref), torch.tensor([1.0, 0.0, 1 / math.sqrt(2), 0.0]))
    # rescaled to ||ref|| = 1: [1, 0] and [1/sqrt2, 1/sqrt2]; weights 1 and 1/sqrt2
    s = 1 / math.sqrt(2)
    want = (torch.tensor([1.0, 0.0]) + s * torch.tensor([s, s])) / (1 + s)  # = [0.8787, 0.2929]
    out, ts = fltrust_combine(x, ref)
    assert torch.allclose(out, want, atol=1e-6) and torch.allclose(ts, trust_scores(x, ref))
    rule = FLTrust().with_reference({"w": ref})
    assert torch.allclose(rule(_w([3.0, 0.0], [-5.0, 0.0], [1.0, 1.0], [0.0, 2.0]), [1, 1, 1, 1])["w"], want, atol=1e-6)


def test_negative_cosine_gets_weight_zero_and_norms_are_rescaled():
    rule = FLTrust().with_reference({"w": torch.tensor([0.0, 2.0])})
    # a client far larger in the reference's direction counts as one update of the reference's norm
    assert torch.allclose(rule(_w([0.0, 1e6]), [1])["w"], torch.tensor([0.0, 2.0]))
    # the negative-cosine client (however large) changes nothing
    one = rule(_w([1.0, 1.0]), [1])["w"]
    assert torch.allclose(rule(_w([1.0, 1.0], [-3e6, -1e6]), [1, 1])["w"], one)
    assert torch.allclose(one.norm(), torch.tensor(2.0))


def test_all_distrusted_or_zero_reference_keeps_the_model():
    rule = FLTrust().with_reference({"w": torch.tensor([1.0, 1.0])})
    assert torch.equal(rule(_w([-1.0, -1.0], [-2.0, 1.0], [0.0, 0.0]), [1, 1, 1])["w"], torch.zeros(2))
    zero = FLTrust().with_reference({"w": torch.zeros(2)})
    assert torch.equal(zero(_w([1.0, 1.0]), [1])["w"], torch.zeros(2))


def test_self_reported_weights_are_ignored():
    rule = FLTrust().with_reference({"w": torch.tensor([1.0, 0.0])})
    d = _w([1.0, 0.0], [1.0, 1.0])
    assert torch.equal(rule(d, [1, 1])["w"], rule(d, [1000, 1])["w"])


K, D = 15, 40


def _planted(n_bad: int, attack: str, seed: int = 0):
    """Honest deltas ~ N(1, 0.1^2); the reference is an independent honest draw (a clean root set)."""
    g = torch.Generator().manual_seed(seed)
    honest = 1.0 + 0.1 * torch.randn(K - n_bad, D, generator=g)
    ref = 1.0 + 0.1 * torch.randn(D, generator=g)
    mu = honest.mean(0)
    bad = {"sign_flip": -1e3 * mu, "scale": 1e3 * mu}[attack].expand(n_bad, D)
    deltas = [{"w": r.clone()} for r in torch.cat([honest, bad])]
    return deltas, {"w": ref}, mu


@pytest.mark.parametrize("attack", ["sign_flip", "scale"])
@pytest.mark.parametrize("n_bad", [1, 7, 14])
def test_planted_sign_flipped_and_scaled_outliers_are_resisted(attack, n_bad):
    deltas, ref, mu = _planted(n_bad, attack)
    out = FLTrust().with_reference(ref)(deltas, [1.0] * K)["w"]
    mean = build_aggregator("mean")(deltas, [1.0] * K)["w"]
    # the result has (nearly) the reference's norm, points along the honest mean; the mean is dragged away
    assert 0.99 * float(ref["w"].norm()) < float(out.norm()) <= float(ref["w"].norm()) * (1 + 1e-6)
    assert float(torch.nn.functional.cosine_similarity(out, mu, dim=0)) > 0.99
    assert float((mean - mu).norm()) > 100.0


def test_breaks_when_attackers_align_with_the_reference():
    # attackers with cosine 0.6 to the reference but pointing elsewhere: trusted, and 12 of 15 of
    # them turn the aggregate away from the honest direction (its norm stays at most ||g_0||)
    deltas, ref, mu = _planted(12, "scale")
    r = ref["w"] / ref["w"].norm()
    u = torch.zeros(D)
    u[0], u[1] = 1.0, -1.0
    u = u - (u @ r) * r
    u = u / u.norm()
    evil = 0.6 * r + 0.8 * u
    deltas = deltas[:3] + [{"w": 50 * evil.clone()} for _ in range(12)]
    out = FLTrust().with_reference(ref)(deltas, [1.0] * K)["w"]
    assert float(out.norm()) <= float(ref["w"].norm()) * (1 + 1e-5)
    assert float(torch.nn.functional.cosine_similarity(out, mu, dim=0)) < 0.8


def test_refusals():
    with pytest.raises(ConfigError, match="fltrust: root_size = 0: expected an integer >= 1"):
        build_aggregator("fltrust", root_size=0)
    with pytest.raises(ConfigError, match="unknown parameter 'reference'"):
        build_aggregator("fltrust", reference={})
    with pytest.raises(ConfigError, match="no reference update for this round"):
        build_aggregator("fltrust")(_w([1.0]), [1])
    with pytest.raises(ConfigError, match="expected the same tensors and shapes"):
        FLTrust().with_reference({"v": torch.ones(1)})(_w([1.0]), [1])
    build_aggregator("fltrust", root_size=100).check(1)


def _tiny(n_train: int = 300, clients: int = 6) -> FederatedDataset:
    g = torch.Generator().manual_seed(0)
    w = torch.randn(5, 3, generator=g)
    x = torch.randn(n_train + 200, 5, generator=g)
    y = (x @ w).argmax(1)
    ds = Dataset("tiny", ArrayData(x[:n_train], y[:n_train]), ArrayData(x[n_train:], y[n_train:]), num_classes=3)
    return FederatedDataset(ds, tuple(np.array_split(np.arange(n_train), clients)), "hand")


class _SignFlip:
    """Clients 0 and 1 send -10 x their update."""

    def is_malicious(self, c):
        return c in (0, 1)

    def poison_data(self, c, data, rng):
        return data

    def poison_updates(self, mal, ben, rng):
        from dataclasses import replace

        return [replace(r, delta={k: -10 * v for k, v in r.delta.items()}) for r in mal]


def _sim(fed, aggregator, attack=None, algo=None, rounds=15):
    algo = algo or FedAvg(1.0, LocalSGD(1, 10, 0.5))
    return Simulator(
        seeded(lambda: LogReg(5, 3), 0),
        fed,
        algo,
        SimulationConfig(rounds=rounds, eval_every=rounds),
        aggregator=aggregator,
        attack=attack,
    )


def test_simulator_supplies_the_root_set_reference_and_fltrust_resists_sign_flipping():
    fed = _tiny()
    acc = {
        name: _sim(fed, build_aggregator(name), _SignFlip()).run().history[-1].test_accuracy
        for name in ("mean", "fltrust")
    }
    clean = _sim(fed, None).run().history[-1].test_accuracy
    assert acc["fltrust"] > clean - 0.05 and acc["fltrust"] > acc["mean"] + 0.2
    sim = _sim(fed, build_aggregator("fltrust", root_size=40))
    assert len(sim.reference.root) == 40
    # the server runs as many local steps as a client of average size (50 examples, B = 10)
    assert sim.reference.plan.num_steps == 5


def test_root_set_refusals_before_the_run():
    fed = _tiny()
    with pytest.raises(ConfigError, match="root set of 301 examples: expected 1..300"):
        _sim(fed, build_aggregator("fltrust", root_size=301))
    # FedNova's clients send delta / ||a||_1: the server's g_0 is the same statistic (no name list, issue 11)
    nova = _sim(fed, build_aggregator("fltrust"), algo=FedNova(1.0, LocalSGD(1, 10, 0.5)))
    g0 = nova.reference.update(nova.params, None, np.random.default_rng(0))
    up = client_update(
        nova.algorithm,
        nova.model,
        nova.params,
        nova.reference.root,
        np.random.default_rng(0),
        client_id=-1,
        plan=nova.reference.plan,
    )
    steps = nova.reference.plan.num_steps
    for k, v in up.result.delta.items():
        torch.testing.assert_close(g0[k], v / steps)  # plain SGD: ||a||_1 = the local steps
    with pytest.raises(ConfigError, match="root set of 0 examples"):
        RootReference(LogReg(5, 3), fed, FedAvg(1.0, LocalSGD(1, 10, 0.5)), 0, np.random.default_rng(0))
