"""Algorithms: cohort size, weighted aggregation, FedAvg/FedSGD server updates, local SGD, evaluation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hamrah.algorithms import (
    DELTA,
    ClientResult,
    FedAvg,
    FedSGD,
    LocalSGD,
    NoState,
    aggregate_results,
    apply_results,
    batch_schedule,
    build,
    cohort_size,
    evaluate,
    train_local,
)
from hamrah.algorithms.local import PAD_LABEL, iter_batches, masked_mean_loss
from hamrah.core.errors import ConfigError, NotEnoughClients, TrainingStopped
from hamrah.core.params import clone, max_abs_diff, sub
from hamrah.data import ArrayData
from hamrah.models import LogReg, TwoNN

# ---- cohort size ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "c, k, m",
    [
        (0.0, 100, 1),
        (0.1, 100, 10),
        (1.0, 100, 100),
        (1.0, 7, 7),
        (0.01, 50, 1),
        (0.2, 10, 2),
        (0.3, 10, 3),
        (0.7, 10, 7),
        (0.29, 100, 29),
        (0.5, 3, 1),
    ],
)
def test_cohort_size(c, k, m):
    assert cohort_size(c, k) == m
    assert FedAvg(c, LocalSGD(1, 10, 0.1)).cohort_size(k) == m
    assert FedSGD(c, 0.1).cohort_size(k) == m


@pytest.mark.parametrize("c", [-0.1, 1.5, math.nan, True])
def test_cohort_size_rejects_bad_fraction(c):
    with pytest.raises(ConfigError, match="client_fraction"):
        cohort_size(c, 10)


@pytest.mark.parametrize("name", ["fedavg", "fedsgd", "scaffold", "fedadam"])
@pytest.mark.parametrize("c", [-0.1, 1.5, math.nan, math.inf, True, "0.5"])
def test_build_refuses_a_bad_client_fraction_before_any_round(name, c):
    with pytest.raises(ConfigError, match=r"^algorithm.client_fraction = .*: expected a number in \[0, 1\]$"):
        build(name, c)


def test_client_fraction_zero_is_one_client_per_round():  # McMahan et al.'s C = 0
    assert build("fedavg", 0.0).cohort_size(100) == 1


# ---- aggregation ----------------------------------------------------------------------------------


def _res(cid, delta, n, error=None):
    return ClientResult(cid, {k: torch.tensor(v, dtype=torch.float32) for k, v in delta.items()}, n, error=error)


_AVG = FedAvg(0.1, LocalSGD(1, 10, 0.1))


def weighted_mean_delta(results):
    return aggregate_results(_AVG, results).mean(DELTA)


def test_weighted_mean_delta_weights_by_examples():
    results = [_res(0, {"w": [1.0, 0.0]}, 1), _res(1, {"w": [0.0, 4.0]}, 3)]
    mean = weighted_mean_delta(results)
    torch.testing.assert_close(mean["w"], torch.tensor([0.25, 3.0]))
    agg = aggregate_results(_AVG, results)
    assert (agg.weight, agg.count) == (4.0, 2)


def test_weighted_mean_delta_skips_failed_and_empty_clients():
    results = [
        ClientResult(5, {}, 1000, error="timeout"),
        _res(0, {"w": [2.0]}, 1),
        _res(1, {"w": [100.0]}, 0),
        _res(2, {"w": [4.0]}, 1),
    ]
    torch.testing.assert_close(weighted_mean_delta(results)["w"], torch.tensor([3.0]))


def test_not_enough_clients_when_all_failed():
    results = [ClientResult(0, {}, 10, error="crash"), ClientResult(1, {}, 5, error="crash")]
    with pytest.raises(NotEnoughClients, match="no client"):
        weighted_mean_delta(results)
    with pytest.raises(NotEnoughClients):
        weighted_mean_delta([])
    with pytest.raises(NotEnoughClients):
        apply_results(FedAvg(0.1, LocalSGD(1, 10, 0.1)), {"w": torch.zeros(1)}, results, NoState())


def test_fedavg_apply_hand_computed():
    g = {"w": torch.tensor([[1.0, 2.0], [3.0, 4.0]]), "b": torch.tensor([0.5])}
    # Client models w_1 (n=100) and w_2 (n=300); the server takes their weighted average.
    w1 = {"w": torch.tensor([[2.0, 2.0], [3.0, 0.0]]), "b": torch.tensor([1.5])}
    w2 = {"w": torch.tensor([[1.0, 6.0], [7.0, 4.0]]), "b": torch.tensor([-0.5])}
    results = [
        ClientResult(0, sub(w1, g), 100),
        ClientResult(1, sub(w2, g), 300),
        ClientResult(2, {}, 50, error="dropped"),
    ]
    new = apply_results(FedAvg(0.5, LocalSGD(1, 10, 0.1)), g, results, NoState())[0]
    torch.testing.assert_close(new["w"], torch.tensor([[1.25, 5.0], [6.0, 3.0]]))
    torch.testing.assert_close(new["b"], torch.tensor([0.0]))
    # The input model is not modified in place.
    torch.testing.assert_close(g["w"], torch.tensor([[1.0, 2.0], [3.0, 4.0]]))


def test_fedsgd_apply_hand_computed():
    g = {"w": torch.tensor([1.0, 1.0])}
    results = [_res(0, {"w": [-1.0, 0.0]}, 1), _res(1, {"w": [0.0, -2.0]}, 1)]  # deltas = -gradients
    new = apply_results(FedSGD(0.1, lr=0.5), g, results, NoState())[0]
    torch.testing.assert_close(new["w"], torch.tensor([0.75, 0.5]))


def test_fedsgd_rejects_bad_lr():
    for lr in (0.0, -1.0):
        with pytest.raises(ConfigError, match="algorithm.lr"):
            FedSGD(0.1, lr)


def _client_data(n: int, seed: int) -> ArrayData:
    g = torch.Generator().manual_seed(seed)
    return ArrayData(torch.rand(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g))


def test_fedsgd_equals_fedavg_e1_binf():
    torch.manual_seed(0)
    model = TwoNN()
    g = clone(dict(model.named_parameters()))
    datas = [_client_data(30, 1), _client_data(70, 2), _client_data(13, 3)]
    lr = 0.3
    sgd = FedSGD(1.0, lr)
    avg = FedAvg(1.0, LocalSGD(epochs=1, batch_size=None, lr=lr))
    assert sgd.local_plan() == LocalSGD(1, None, 1.0)

    def round_with(algo):
        results = []
        for c, d in enumerate(datas):
            loc = train_local(model, g, d, algo.local_plan(), np.random.default_rng(c))
            results.append(ClientResult(c, sub(loc.params, g), len(d)))
        return apply_results(algo, g, results, NoState())[0]

    w_sgd, w_avg = round_with(sgd), round_with(avg)
    assert max_abs_diff(w_sgd, w_avg) < 1e-6
    assert max_abs_diff(w_sgd, g) > 1e-3  # the round did move the model


def test_train_local_full_batch_is_one_gradient_step():
    torch.manual_seed(1)
    model = LogReg()
    g = clone(dict(model.named_parameters()))
    d = _client_data(25, 4)
    lr = 0.7
    loc = train_local(model, g, d, LocalSGD(1, None, lr), np.random.default_rng(0))
    w = {k: v.clone().requires_grad_() for k, v in g.items()}
    loss = F.cross_entropy(d.x.flatten(1) @ w["fc.weight"].T + w["fc.bias"], d.y)
    grads = torch.autograd.grad(loss, list(w.values()))
    loss = loss.detach()
    for (k, v), gr in zip(g.items(), grads):
        torch.testing.assert_close(loc.params[k], v - lr * gr, atol=1e-6, rtol=1e-5)
    assert loc.train_loss == pytest.approx(loss.item(), rel=1e-5)


def test_train_local_does_not_modify_global_params():
    torch.manual_seed(2)
    model = LogReg()
    g = clone(dict(model.named_parameters()))
    before = clone(g)
    loc = train_local(model, g, _client_data(40, 5), LocalSGD(2, 8, 0.5), np.random.default_rng(0))
    assert max_abs_diff(g, before) == 0.0
    assert max_abs_diff(loc.params, g) > 1e-3


def test_train_local_reduces_loss_on_its_data():
    torch.manual_seed(3)
    model = LogReg()
    g = clone(dict(model.named_parameters()))
    d = _client_data(50, 6)
    before, _ = evaluate(model, g, d)
    loc = train_local(model, g, d, LocalSGD(5, 10, 0.05), np.random.default_rng(0))
    after, _ = evaluate(model, loc.params, d)
    assert after < before


# ---- batch schedule -------------------------------------------------------------------------------


def test_batch_schedule_covers_each_example_once_per_epoch():
    n, b, e = 23, 5, 3
    sched = batch_schedule(n, LocalSGD(e, b, 0.1), np.random.default_rng(0))
    per_epoch = math.ceil(n / b)
    assert len(sched) == e * per_epoch == LocalSGD(e, b, 0.1).steps(n)
    epochs = [sched[i * per_epoch : (i + 1) * per_epoch] for i in range(e)]
    for ep in epochs:
        assert [len(x) for x in ep] == [5, 5, 5, 5, 3]
        assert sorted(np.concatenate(ep).tolist()) == list(range(n))
    # Each epoch is a fresh shuffle.
    assert not np.array_equal(np.concatenate(epochs[0]), np.concatenate(epochs[1]))
    assert not np.array_equal(np.concatenate(epochs[0]), np.arange(n))


def test_training_draws_its_batches_lazily_leaving_rng_where_the_whole_schedule_does():
    """A plan of 10^9 epochs built a list of 4 x 10^9 batches before its first step (a server's plan
    could take a device's memory); the batches are now drawn as reached, from the same draws."""
    first = next(iter_batches(20, LocalSGD(10**9, 5, 0.1), np.random.default_rng(0)))
    assert sorted(first.tolist()) == sorted(batch_schedule(20, LocalSGD(1, 5, 0.1), np.random.default_rng(0))[0])
    data = ArrayData(torch.rand(23, 784), torch.randint(0, 10, (23,)))
    for plan in (LocalSGD(2, 5, 0.1), LocalSGD(1, 4, 0.1, num_steps=9)):
        a, b = np.random.default_rng(3), np.random.default_rng(3)
        result = train_local(LogReg(), clone(dict(LogReg().named_parameters())), data, plan, a)
        assert result.steps == len(batch_schedule(23, plan, b))
        assert a.random() == b.random()  # the steps after (DP-SGD's noise seed, Ditto's pass) draw as before


def test_training_stops_between_steps_when_asked():
    calls = []

    def stop():  # asked once before the schedule, then before each step
        calls.append(1)
        return len(calls) > 4

    data = ArrayData(torch.rand(23, 784), torch.randint(0, 10, (23,)))
    params = clone(dict(LogReg().named_parameters()))
    with pytest.raises(TrainingStopped, match="after 3 steps"):
        train_local(LogReg(), params, data, LocalSGD(3, 5, 0.1), np.random.default_rng(0), stop=stop)


def test_batch_schedule_deterministic_under_rng():
    p = LocalSGD(2, 4, 0.1)
    a = batch_schedule(10, p, np.random.default_rng(9))
    b = batch_schedule(10, p, np.random.default_rng(9))
    assert all(np.array_equal(x, y) for x, y in zip(a, b))


def test_batch_schedule_b_inf_is_one_batch_per_epoch():
    sched = batch_schedule(17, LocalSGD(3, None, 0.1), np.random.default_rng(0))
    assert len(sched) == 3 == LocalSGD(3, None, 0.1).steps(17)
    for batch in sched:
        assert sorted(batch.tolist()) == list(range(17))
    # B larger than the data also gives one (full) batch per epoch.
    sched = batch_schedule(7, LocalSGD(2, 50, 0.1), np.random.default_rng(0))
    assert [len(x) for x in sched] == [7, 7]
    assert LocalSGD(2, 50, 0.1).steps(7) == 2


def test_steps_formula():
    assert LocalSGD(1, 10, 0.1).steps(600) == 60
    assert LocalSGD(5, 10, 0.1).steps(600) == 300
    assert LocalSGD(1, 50, 0.1).steps(601) == 13


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(epochs=0, batch_size=10, lr=0.1),
        dict(epochs=-1, batch_size=10, lr=0.1),
        dict(epochs=1.5, batch_size=10, lr=0.1),
        dict(epochs=1, batch_size=0, lr=0.1),
        dict(epochs=1, batch_size=-5, lr=0.1),
        dict(epochs=1, batch_size=2.5, lr=0.1),
        dict(epochs=1, batch_size="inf", lr=0.1),
        dict(epochs=1, batch_size=10, lr=0.0),
        dict(epochs=1, batch_size=10, lr=-0.1),
        dict(epochs=1, batch_size=10, lr=float("nan")),
        dict(epochs=1, batch_size=10, lr=float("inf")),
        dict(epochs=1, batch_size=10, lr="0.1"),
    ],
)
def test_local_sgd_rejects_bad_values(kwargs):
    bad = next(k for k, v in kwargs.items() if (k, v) not in {("epochs", 1), ("batch_size", 10), ("lr", 0.1)})
    key = {"epochs": "local_epochs", "batch_size": "batch_size", "lr": "lr"}[bad]
    with pytest.raises(ConfigError, match=f"algorithm.{key}"):
        LocalSGD(**kwargs)


def test_local_sgd_accepts_good_values():
    p = LocalSGD(epochs=5, batch_size=None, lr=1)
    assert (p.epochs, p.batch_size, p.lr) == (5, None, 1)


# ---- loss and evaluation --------------------------------------------------------------------------


def test_masked_mean_loss_ignores_padding():
    logits = torch.randn(2, 4, 3)
    y = torch.tensor([[0, 2, PAD_LABEL, 1], [PAD_LABEL] * 4])
    losses = masked_mean_loss(logits, y)
    ref = F.cross_entropy(logits[0, [0, 1, 3]], y[0, [0, 1, 3]])
    torch.testing.assert_close(losses[0], ref)
    assert float(losses[1]) == 0.0


def test_evaluate_trivial_classifier():
    model = LogReg(in_features=4, num_classes=3)
    params = {"fc.weight": torch.zeros(3, 4), "fc.bias": torch.tensor([0.0, 2.0, 0.0])}  # always class 1
    y = torch.tensor([1, 1, 1, 0, 2, 1, 0, 2])
    data = ArrayData(torch.randn(8, 4), y)
    loss, acc = evaluate(model, params, data, batch_size=3)  # several evaluation batches
    assert acc == pytest.approx(4 / 8)
    log_z = math.log(math.exp(2.0) + 2.0)
    expected = (4 * (log_z - 2.0) + 4 * log_z) / 8
    assert loss == pytest.approx(expected, rel=1e-5)


class _ConstSeq(nn.Module):
    """A sequence 'model' predicting the same logits at every position."""

    def __init__(self, vocab: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(vocab))

    def forward(self, x):
        return self.bias.expand(*x.shape, -1)


def test_evaluate_sequences_skips_ignore_index():
    model = _ConstSeq(5)
    params = {"bias": torch.tensor([0.0, 0.0, 0.0, 9.0, 0.0])}  # always predicts 3
    y = torch.tensor([[3, 3, 1, 0, 0], [3, 2, 0, 0, 0]])  # 0 = padding
    data = ArrayData(torch.zeros_like(y), y)
    _, acc = evaluate(model, params, data, ignore_index=0)
    assert acc == pytest.approx(3 / 5)
    _, acc_all = evaluate(model, params, data)  # without ignore_index, padding counts as label 0
    assert acc_all == pytest.approx(3 / 10)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(epochs=True, batch_size=10, lr=0.1),
        dict(epochs=1, batch_size=10, lr=True),
        dict(epochs=1, batch_size=True, lr=0.1),
    ],
)
def test_local_sgd_rejects_booleans(kwargs):
    with pytest.raises(ConfigError):
        LocalSGD(**kwargs)


def test_fedsgd_rejects_infinite_lr():
    with pytest.raises(ConfigError):
        FedSGD(0.1, float("inf"))
