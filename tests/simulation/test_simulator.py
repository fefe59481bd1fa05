"""The simulator: batched == sequential, determinism, cohort sampling, learning, stopping, eval cadence."""

from __future__ import annotations

import dataclasses
import functools
import os

import numpy as np
import pytest
import torch

from hamrah.algorithms import FedAvg, FedSGD, LocalSGD, Scaffold
from hamrah.core.errors import ConfigError
from hamrah.core.params import max_abs_diff
from hamrah.data import ArrayData, Dataset, FederatedDataset, federate
from hamrah.models import CNN, CharLSTM, LogReg, TwoNN
from hamrah.simulation import SimulationConfig, Simulator, seeded, supports_batching, train_cohort


def _subset(mnist, n_train: int, n_test: int) -> Dataset:
    return Dataset(
        "mnist_small",
        ArrayData(mnist.train.x[:n_train], mnist.train.y[:n_train]),
        ArrayData(mnist.test.x[:n_test], mnist.test.y[:n_test]),
        num_classes=10,
    )


@pytest.fixture(scope="module")
def small(mnist):
    return _subset(mnist, 2000, 1000)


def _hand_split(ds: Dataset, sizes: list[int], seed: int = 0) -> FederatedDataset:
    perm = np.random.default_rng(seed).permutation(len(ds.train))
    cuts = np.cumsum(sizes)[:-1]
    parts = tuple(np.sort(p) for p in np.split(perm[: sum(sizes)], cuts))
    return FederatedDataset(ds, parts, "hand")


class _TwoNNAutograd(TwoNN):
    """TwoNN without the fused MLP path: the batched trainer falls back to autograd."""

    mlp_layers = None


def _run(factory, fed, algo, *, batched, rounds, seed=0, workers=1, **kw):
    cfg = SimulationConfig(rounds=rounds, seed=seed, batched=batched, workers=workers, **kw)
    sim = Simulator(seeded(factory, seed), fed, algo, cfg)
    assert sim.batched is batched and sim.workers == workers
    return sim, sim.run()


def _init(factory, seed=0):
    return {k: v.detach().clone() for k, v in seeded(factory, seed).named_parameters()}


def _strip(history):
    return [dataclasses.replace(h, elapsed_s=0.0) for h in history]


# ---- batched == sequential ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "factory, algo",
    [
        (TwoNN, FedAvg(0.6, LocalSGD(epochs=2, batch_size=10, lr=0.1))),
        (LogReg, FedAvg(0.6, LocalSGD(epochs=2, batch_size=10, lr=0.1))),
        (_TwoNNAutograd, FedAvg(0.6, LocalSGD(epochs=2, batch_size=10, lr=0.1))),
        (TwoNN, FedAvg(0.6, LocalSGD(epochs=1, batch_size=None, lr=0.1))),
        (LogReg, FedSGD(0.6, lr=0.5)),
    ],
    ids=["2nn", "logreg", "2nn-autograd", "2nn-binf", "logreg-fedsgd"],
)
def test_batched_equals_sequential_unequal_clients(small, factory, algo):
    # Unequal sizes: clients have different step counts and partial last batches.
    fed = _hand_split(small, [13, 40, 27, 8, 55])
    sim_b, res_b = _run(factory, fed, algo, batched=True, rounds=3)
    sim_s, res_s = _run(factory, fed, algo, batched=False, rounds=3)
    assert max_abs_diff(res_b.params, res_s.params) < 1e-4
    assert max_abs_diff(res_b.params, _init(factory)) > 1e-3
    for hb, hs in zip(res_b.history, res_s.history):
        assert hb.round == hs.round and hb.clients == hs.clients == 3
        assert hb.test_accuracy == pytest.approx(hs.test_accuracy, abs=2e-3)
        assert hb.train_loss == pytest.approx(hs.train_loss, rel=1e-4)


def test_batched_equals_sequential_unbalanced_partition(small):
    fed = federate(small, "unbalanced", 8, seed=3, sigma=1.0)
    assert len(set(fed.client_sizes().tolist())) > 1
    algo = FedAvg(0.5, LocalSGD(epochs=1, batch_size=16, lr=0.1))
    _, res_b = _run(TwoNN, fed, algo, batched=True, rounds=2)
    _, res_s = _run(TwoNN, fed, algo, batched=False, rounds=2)
    assert max_abs_diff(res_b.params, _init(TwoNN)) > 1e-3
    assert max_abs_diff(res_b.params, res_s.params) < 1e-4


def test_batched_equals_sequential_cnn(mnist):
    ds = _subset(mnist, 200, 100)
    fed = _hand_split(ds, [14, 20, 26, 9], seed=1)
    algo = FedAvg(0.5, LocalSGD(epochs=1, batch_size=8, lr=0.05))
    _, res_b = _run(CNN, fed, algo, batched=True, rounds=2, eval_every=2)
    _, res_s = _run(CNN, fed, algo, batched=False, rounds=2, eval_every=2)
    assert max_abs_diff(res_b.params, res_s.params) < 1e-4
    assert max_abs_diff(res_b.params, _init(CNN)) > 1e-4


def test_worker_processes_match_in_process(mnist):
    # Sequential training spread over 2 worker processes gives the in-process result, and so does
    # batched training in workers.
    ds = _subset(mnist, 400, 100)
    fed = _hand_split(ds, [30, 70, 45, 12, 90, 25], seed=2)
    algo = FedAvg(0.5, LocalSGD(epochs=2, batch_size=10, lr=0.1))
    _, ref = _run(TwoNN, fed, algo, batched=False, rounds=3, workers=1)
    sim, par = _run(TwoNN, fed, algo, batched=False, rounds=3, workers=2)
    assert sim._pool is None  # run() shut the workers down
    assert max_abs_diff(ref.params, par.params) < 1e-5
    assert [h.round for h in par.history] == [1, 2, 3]
    for a, b in zip(ref.history, par.history):
        assert a.test_accuracy == pytest.approx(b.test_accuracy, abs=1e-3)
        assert a.train_loss == pytest.approx(b.train_loss, rel=1e-4)
    _, bpar = _run(TwoNN, fed, algo, batched=True, rounds=3, workers=2)
    assert max_abs_diff(ref.params, bpar.params) < 1e-4


def test_train_cohort_matches_train_local_per_client(small):
    from hamrah.algorithms import train_local

    fed = _hand_split(small, [11, 30, 5])
    model = seeded(LogReg, 1)
    g = {k: v.detach().clone() for k, v in model.named_parameters()}
    plan = LocalSGD(epochs=3, batch_size=4, lr=0.2)
    datas = [fed.client_data(i) for i in range(3)]
    out = train_cohort(model, g, datas, plan, [np.random.default_rng(i) for i in range(3)])
    for i, d in enumerate(datas):
        ref = train_local(model, g, d, plan, np.random.default_rng(i))
        assert max_abs_diff(out[i].params, ref.params) < 1e-5
        assert out[i].train_loss == pytest.approx(ref.train_loss, rel=1e-4)


# ---- determinism ----------------------------------------------------------------------------------


def test_same_seed_same_run_different_seed_different(small):
    fed = federate(small, "iid", 10, seed=0)
    algo = FedAvg(0.3, LocalSGD(epochs=1, batch_size=20, lr=0.1))
    _, a = _run(LogReg, fed, algo, batched=True, rounds=3, seed=5)
    _, b = _run(LogReg, fed, algo, batched=True, rounds=3, seed=5)
    _, c = _run(LogReg, fed, algo, batched=True, rounds=3, seed=6)
    assert _strip(a.history) == _strip(b.history)
    assert max_abs_diff(a.params, b.params) == 0.0
    assert max_abs_diff(a.params, c.params) > 1e-3
    assert _strip(a.history) != _strip(c.history)


def test_seeded_leaves_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    m1 = _init(LogReg, 4)
    after = torch.rand(3)
    assert torch.equal(expected, after)
    assert max_abs_diff(m1, _init(LogReg, 4)) == 0.0
    assert max_abs_diff(m1, _init(LogReg, 5)) > 0.0


# ---- sampling -------------------------------------------------------------------------------------


def test_cohorts_have_size_m_and_vary(small):
    fed = federate(small, "iid", 20, seed=0)
    sim = Simulator(LogReg(), fed, FedAvg(0.25, LocalSGD(1, 10, 0.1)), SimulationConfig(rounds=1, seed=3))
    assert sim.cohort == 5
    cohorts = [sim.sample(r) for r in range(1, 21)]
    for c in cohorts:
        assert len(c) == 5 and len(set(c.tolist())) == 5
        assert np.all(np.diff(c) > 0) and c.min() >= 0 and c.max() < 20
    assert len({tuple(c.tolist()) for c in cohorts}) > 10
    assert len(set(np.concatenate(cohorts).tolist())) >= 15  # over 20 rounds most clients were picked
    # Same seed: same cohorts. Another seed: others.
    sim2 = Simulator(LogReg(), fed, FedAvg(0.25, LocalSGD(1, 10, 0.1)), SimulationConfig(rounds=1, seed=3))
    assert all(np.array_equal(sim2.sample(r), c) for r, c in zip(range(1, 21), cohorts))
    sim3 = Simulator(LogReg(), fed, FedAvg(0.25, LocalSGD(1, 10, 0.1)), SimulationConfig(rounds=1, seed=4))
    assert not all(np.array_equal(sim3.sample(r), c) for r, c in zip(range(1, 21), cohorts))


def test_train_round_reports_cohort(small):
    fed = federate(small, "iid", 10, seed=0)
    sim = Simulator(LogReg(), fed, FedAvg(0.3, LocalSGD(1, 50, 0.1)), SimulationConfig(rounds=1))
    results = sim.train_round(1)
    assert [r.client_id for r in results] == sim.sample(1).tolist()
    assert all(r.num_examples == 200 and r.error is None and "train_loss" in r.metrics for r in results)
    assert set(results[0].delta) == {"fc.weight", "fc.bias"}


# ---- learning, stopping, evaluation cadence -------------------------------------------------------


def test_accuracy_rises_logreg_iid(small):
    fed = federate(small, "iid", 10, seed=0)
    algo = FedAvg(0.5, LocalSGD(epochs=1, batch_size=10, lr=0.1))
    sim = Simulator(seeded(LogReg, 0), fed, algo, SimulationConfig(rounds=5, seed=0))
    loss0, acc0 = sim.evaluate()
    res = sim.run()
    assert [h.round for h in res.history] == [1, 2, 3, 4, 5]
    assert acc0 < 0.3
    assert res.history[-1].test_accuracy > 0.8
    assert res.history[-1].test_loss < loss0
    assert all(h.clients == 5 for h in res.history)


def test_stop_at_target_stops_early(small):
    fed = federate(small, "iid", 10, seed=0)
    algo = FedAvg(0.5, LocalSGD(epochs=1, batch_size=10, lr=0.1))
    cfg = SimulationConfig(rounds=30, seed=0, target_accuracy=0.6, stop_at_target=True)
    res = Simulator(seeded(LogReg, 0), fed, algo, cfg).run()
    assert len(res.history) < 30
    assert res.history[-1].test_accuracy >= 0.6
    assert all(h.test_accuracy < 0.6 for h in res.history[:-1])
    # Without stop_at_target the target is only recorded, the run goes on.
    cfg2 = dataclasses.replace(cfg, rounds=len(res.history) + 2, stop_at_target=False)
    res2 = Simulator(seeded(LogReg, 0), fed, algo, cfg2).run()
    assert len(res2.history) == len(res.history) + 2


def test_eval_every_respected(small):
    fed = federate(small, "iid", 10, seed=0)
    algo = FedAvg(0.2, LocalSGD(epochs=1, batch_size=50, lr=0.1))
    seen = []
    res = Simulator(seeded(LogReg, 0), fed, algo, SimulationConfig(rounds=7, eval_every=3)).run(seen.append)
    assert [h.round for h in res.history] == [3, 6, 7]
    assert seen == res.history
    res = Simulator(seeded(LogReg, 0), fed, algo, SimulationConfig(rounds=6, eval_every=3)).run()
    assert [h.round for h in res.history] == [3, 6]


def test_auto_batched_for_mlps():
    fed = federate(_fake_text(), "iid", 4, seed=0)
    images = FederatedDataset(_subset_images(), (np.arange(5), np.arange(5, 10)), "hand")
    for cls in (TwoNN, LogReg):
        sim = Simulator(cls(), images, FedAvg(1.0, LocalSGD(1, 5, 0.1)), SimulationConfig(rounds=1))
        assert sim.batched is True and sim.workers == 1
    sim = Simulator(CharLSTM(12, hidden=16), fed, FedAvg(0.5, LocalSGD(1, 5, 0.5)), SimulationConfig(rounds=1))
    assert sim.batched is False and sim.workers == 1  # an LSTM trains in-process: workers measured no faster


def test_auto_workers_only_for_convolutional_models_trained_one_client_at_a_time():
    images = FederatedDataset(_subset_images(), (np.arange(5), np.arange(5, 10)), "hand")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    scaffold = Scaffold(1.0, LocalSGD(1, 5, 0.1))  # control variates: never batched
    assert Simulator(LogReg(), images, scaffold, SimulationConfig(rounds=1)).workers == 1
    sim = Simulator(CNN(), images, FedAvg(1.0, LocalSGD(1, 5, 0.1)), SimulationConfig(rounds=1))
    assert sim.batched is False and sim.workers == min(cores, sim.cohort)


def _subset_images() -> Dataset:
    d = ArrayData(torch.rand(10, 1, 28, 28), torch.randint(0, 10, (10,)))
    return Dataset("img", d, d, num_classes=10)


@pytest.mark.parametrize("kw", [dict(rounds=0), dict(rounds=3, eval_every=0), dict(rounds=3, workers=0)])
def test_simulation_config_rejects_bad_values(kw):
    with pytest.raises(ConfigError):
        SimulationConfig(**kw)


# ---- models without a batched form ---------------------------------------------------------------


def _fake_text(n: int = 40, t: int = 10, vocab: int = 12) -> Dataset:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(1, vocab, (n, t), generator=g)
    y = torch.roll(x, -1, 1)
    y[:, -3:] = 0  # padding, ignored
    return Dataset("fake_text", ArrayData(x, y), ArrayData(x[:10], y[:10]), num_classes=vocab, ignore_index=0)


def test_char_lstm_runs_sequentially():
    ds = _fake_text()
    fed = federate(ds, "iid", 4, seed=0)
    factory = functools.partial(CharLSTM, vocab_size=12, hidden=16)
    model = seeded(factory, 0)
    assert not supports_batching(model)
    sim = Simulator(model, fed, FedAvg(0.5, LocalSGD(1, 5, 0.5)), SimulationConfig(rounds=2, workers=1))
    assert sim.batched is False and sim.cohort == 2
    init = _init(factory)
    res = sim.run()
    assert [h.round for h in res.history] == [1, 2]
    assert all(np.isfinite(h.test_loss) and 0.0 <= h.test_accuracy <= 1.0 for h in res.history)
    assert max_abs_diff(res.params, init) > 1e-4


def test_char_lstm_batched_true_is_refused():
    fed = federate(_fake_text(), "iid", 4, seed=0)
    with pytest.raises(ConfigError, match="batched"):
        Simulator(
            CharLSTM(12, hidden=16), fed, FedAvg(0.5, LocalSGD(1, 5, 0.5)), SimulationConfig(rounds=1, batched=True)
        )
