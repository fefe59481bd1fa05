"""Batched cohort training in groups: the same models as one stacked loop over the whole cohort."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hamrah.algorithms import LocalSGD, train_local
from hamrah.core.params import max_abs_diff
from hamrah.data import ArrayData
from hamrah.models import CNN, LogReg, TwoNN
from hamrah.simulation import seeded, train_cohort
from hamrah.simulation.batched import GROUP_SIZE

FEATURES, CLASSES = 12, 4


def _clients(sizes: list[int], seed: int) -> list[ArrayData]:
    g = torch.Generator().manual_seed(seed)
    return [
        ArrayData(torch.rand(n, FEATURES, generator=g), torch.randint(0, CLASSES, (n,), generator=g)) for n in sizes
    ]


def _train(model, datas, plans, group_size, seed):
    g = {k: v.detach().clone() for k, v in model.named_parameters()}
    rngs = [np.random.default_rng([seed, i]) for i in range(len(datas))]
    return g, train_cohort(model, g, datas, plans, rngs, group_size=group_size)


def _equal(a, b) -> bool:
    return (
        len(a) == len(b)
        and all(x.steps == y.steps and x.train_loss == y.train_loss for x, y in zip(a, b))
        and all(torch.equal(x.params[k], y.params[k]) for x, y in zip(a, b) for k in x.params)
    )


plan_st = st.builds(
    LocalSGD,
    epochs=st.integers(1, 2),
    batch_size=st.sampled_from([1, 3, 5, None]),
    lr=st.just(0.1),
    num_steps=st.one_of(st.none(), st.integers(1, 7)),
)


@settings(max_examples=30, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 23), min_size=1, max_size=13),
    group=st.integers(1, 14),
    plans=st.lists(plan_st, min_size=13, max_size=13),
    same_plan=st.booleans(),
    seed=st.integers(0, 2**16),
    mlp=st.sampled_from(["2nn", "logreg"]),
)
def test_grouped_equals_one_stacked_loop(sizes, group, plans, same_plan, seed, mlp):
    """Any client sizes (short last batches), any per-client plans (batch sizes, epochs, steps), any group
    size: every client's model, loss and step count equal those of the whole cohort in one loop, bit for bit."""
    model = seeded(lambda: TwoNN(FEATURES, 8, CLASSES) if mlp == "2nn" else LogReg(FEATURES, CLASSES), seed)
    datas = _clients(sizes, seed)
    chosen = plans[0] if same_plan else plans[: len(sizes)]
    _, whole = _train(model, datas, chosen, len(sizes), seed)
    _, grouped = _train(model, datas, chosen, group, seed)
    assert _equal(whole, grouped)


def test_groups_of_clients_without_examples():
    """A group whose clients hold no examples trains nothing and leaves the others as they were."""
    model = seeded(lambda: TwoNN(FEATURES, 8, CLASSES), 3)
    datas = _clients([0, 0, 5, 0, 9], 3)
    plan = LocalSGD(epochs=1, batch_size=2, lr=0.1)
    g, whole = _train(model, datas, plan, 5, 3)
    _, grouped = _train(model, datas, plan, 2, 3)
    assert _equal(whole, grouped)
    assert whole[0].steps == 0 and all(torch.equal(whole[0].params[k], g[k]) for k in g)
    _, none = _train(model, [datas[0], datas[1]], plan, 1, 3)
    assert [r.steps for r in none] == [0, 0] and all(torch.equal(none[1].params[k], g[k]) for k in g)


@settings(max_examples=10, deadline=None)
@given(sizes=st.lists(st.integers(1, 15), min_size=2, max_size=7), group=st.integers(1, 3), seed=st.integers(0, 99))
def test_grouped_equals_sequential(sizes, group, seed):
    """Each client of a grouped cohort trains to the model the one-client-at-a-time loop gives."""
    model = seeded(lambda: TwoNN(FEATURES, 8, CLASSES), seed)
    datas = _clients(sizes, seed)
    plan = LocalSGD(epochs=2, batch_size=4, lr=0.1)
    g, out = _train(model, datas, plan, group, seed)
    for i, d in enumerate(datas):
        ref = train_local(model, g, d, plan, np.random.default_rng([seed, i]))
        assert max_abs_diff(out[i].params, ref.params) < 1e-5
        assert out[i].train_loss == pytest.approx(ref.train_loss, rel=1e-4, abs=1e-6)


def test_grouped_autograd_path_equals_one_loop():
    """Models without the fused MLP step (the CNN's grouped convolutions, through autograd) group the same way."""
    g = torch.Generator().manual_seed(0)
    datas = [
        ArrayData(torch.rand(n, 1, 8, 8, generator=g), torch.randint(0, CLASSES, (n,), generator=g))
        for n in (4, 7, 2, 5, 3)
    ]
    model = seeded(lambda: CNN(1, CLASSES, 8), 0)
    plan = LocalSGD(epochs=1, batch_size=3, lr=0.05)
    _, whole = _train(model, datas, plan, len(datas), 0)
    _, grouped = _train(model, datas, plan, 2, 0)
    for a, b in zip(whole, grouped):
        assert max_abs_diff(a.params, b.params) < 1e-6 and a.train_loss == pytest.approx(b.train_loss, rel=1e-5)


@pytest.mark.parametrize("bad", [0, -3])
def test_group_size_below_one_is_refused(bad):
    with pytest.raises(ValueError, match="group_size"):
        train_cohort(
            LogReg(FEATURES, CLASSES),
            dict(LogReg(FEATURES, CLASSES).named_parameters()),
            _clients([3], 0),
            LocalSGD(1, 2, 0.1),
            [np.random.default_rng(0)],
            group_size=bad,
        )


def test_default_group_size_is_a_positive_int():
    assert isinstance(GROUP_SIZE, int) and GROUP_SIZE >= 1


@settings(max_examples=25, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 17), min_size=1, max_size=9),
    group=st.integers(1, 9),
    plan=plan_st,
    seed=st.integers(0, 2**16),
    mlp=st.sampled_from(["2nn", "logreg"]),
)
def test_clients_sliced_from_a_pooled_set_train_as_their_own_copies(sizes, group, plan, seed, mlp):
    """Slices of one pooled set (each step's inputs gathered as the step runs) give, bit for bit, the
    models of the same examples copied per client (staged up front), empty clients included."""
    from hamrah.data import ClientSlice

    model = seeded(lambda: TwoNN(FEATURES, 8, CLASSES) if mlp == "2nn" else LogReg(FEATURES, CLASSES), seed)
    pooled = _clients([sum(sizes) + 3], seed)[0]
    order = torch.from_numpy(np.random.default_rng(seed).permutation(len(pooled)))
    ends = np.cumsum([0, *sizes])
    slices = [ClientSlice(pooled, order[a:b]) for a, b in itertools.pairwise(ends)]
    copies = [ArrayData(*s.take(torch.arange(len(s)))) for s in slices]
    _, sliced = _train(model, slices, plan, group, seed)
    _, copied = _train(model, copies, plan, group, seed)
    assert _equal(sliced, copied)
