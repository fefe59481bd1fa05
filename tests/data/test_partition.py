"""Partitioners: IID, McMahan's shards, Dirichlet label skew, natural groups, unbalanced sizes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hamrah.core.errors import ConfigError
from hamrah.core.seeds import partition_rng
from hamrah.data import ArrayData, Dataset, describe, federate, partition


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _check_disjoint(parts, n: int, *, cover: bool) -> None:
    allidx = np.concatenate(parts)
    assert len(np.unique(allidx)) == len(allidx), "an example was given to two clients"
    assert allidx.min() >= 0 and allidx.max() < n
    if cover:
        assert len(allidx) == n
    for p in parts:
        assert np.all(np.diff(p) > 0), "client indices are sorted and unique"


@pytest.fixture(scope="module")
def labels(mnist):
    return mnist.train.y.numpy()


# ---- iid ------------------------------------------------------------------------------------------


def test_iid_equal_disjoint_covering():
    parts = partition.iid(1000, 10, rng())
    assert len(parts) == 10
    assert [len(p) for p in parts] == [100] * 10
    _check_disjoint(parts, 1000, cover=True)


def test_iid_sizes_differ_by_at_most_one_when_not_divisible():
    parts = partition.iid(1003, 10, rng())
    sizes = [len(p) for p in parts]
    assert sum(sizes) == 1003 and max(sizes) - min(sizes) == 1
    _check_disjoint(parts, 1003, cover=True)


def test_iid_is_shuffled_and_seeded():
    a = partition.iid(1000, 10, rng(0))
    b = partition.iid(1000, 10, rng(0))
    c = partition.iid(1000, 10, rng(1))
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))
    assert not np.array_equal(a[0], np.arange(100)), "IID split is not a contiguous cut"


# ---- shards ---------------------------------------------------------------------------------------


def test_shards_mcmahan_split(labels):
    parts = partition.shards(labels, 100, 2, rng())
    assert len(parts) == 100
    assert all(len(p) == 600 for p in parts)
    _check_disjoint(parts, 60_000, cover=True)
    # The 200 shards of 300 are cut from the label-sorted data; class sizes are not multiples of
    # 300, so the 9 shards that straddle a digit boundary hold 2 digits and every other shard one.
    order = np.argsort(labels, kind="stable")
    shard_labels = [len(np.unique(labels[order[i * 300 : (i + 1) * 300]])) for i in range(200)]
    assert max(shard_labels) == 2 and sum(n == 2 for n in shard_labels) == 9
    labels_per_client = np.array([len(np.unique(labels[p])) for p in parts])
    assert labels_per_client.max() <= 4
    assert (labels_per_client <= 2).sum() >= 100 - 9 * 2
    # Every client's data is dominated by (at most) two digits.
    top2 = [np.sort(np.bincount(labels[p], minlength=10))[-2:].sum() / 600 for p in parts]
    assert min(top2) >= 0.5 and np.median(top2) == 1.0


def test_shards_drop_remainder_and_seeded():
    y = np.repeat(np.arange(5), 21)  # 105 examples, 10 shards of 10: 5 examples left over
    a = partition.shards(y, 5, 2, rng(3))
    assert all(len(p) == 20 for p in a)
    _check_disjoint(a, 105, cover=False)
    b = partition.shards(y, 5, 2, rng(3))
    assert all(np.array_equal(x, z) for x, z in zip(a, b))


# ---- dirichlet ------------------------------------------------------------------------------------


def test_dirichlet_small_alpha_fewer_labels(labels):
    y = labels[:6000]
    skewed = partition.dirichlet(y, 10, 0.1, rng(0))
    flat = partition.dirichlet(y, 10, 100.0, rng(0))
    for parts in (skewed, flat):
        _check_disjoint(parts, 6000, cover=True)
        assert min(len(p) for p in parts) >= 10
    lab_skewed = np.mean([len(np.unique(y[p])) for p in skewed])
    lab_flat = np.mean([len(np.unique(y[p])) for p in flat])
    assert lab_flat == 10.0
    assert lab_skewed < lab_flat - 2


def test_dirichlet_min_examples_respected(labels):
    y = labels[:6000]
    parts = partition.dirichlet(y, 10, 0.3, rng(1), min_examples=150)
    assert min(len(p) for p in parts) >= 150


def test_dirichlet_deterministic_under_seed(labels):
    y = labels[:3000]
    a = partition.dirichlet(y, 8, 0.5, partition_rng(4))
    b = partition.dirichlet(y, 8, 0.5, partition_rng(4))
    c = partition.dirichlet(y, 8, 0.5, partition_rng(5))
    assert all(np.array_equal(x, z) for x, z in zip(a, b))
    assert not all(np.array_equal(x, z) for x, z in zip(a, c))


def test_dirichlet_impossible_raises():
    y = np.repeat(np.arange(10), 100)
    with pytest.raises(ConfigError, match="data.alpha"):
        partition.dirichlet(y, 10, 0.01, rng(0), min_examples=100, max_tries=3)


# ---- natural --------------------------------------------------------------------------------------


def test_natural_one_client_per_group():
    groups = np.array([2, 0, 1, 2, 0, 2, 1, 1, 2])
    parts = partition.natural(groups, None, rng())
    assert len(parts) == 3
    assert [p.tolist() for p in parts] == [[1, 4], [2, 6, 7], [0, 3, 5, 8]]
    _check_disjoint(parts, len(groups), cover=True)


def test_natural_subset_of_groups():
    groups = np.repeat(np.arange(10), 3)
    parts = partition.natural(groups, 4, rng(0))
    assert len(parts) == 4
    for p in parts:
        assert len(p) == 3 and len(np.unique(groups[p])) == 1
    chosen = [int(groups[p[0]]) for p in parts]
    assert chosen == sorted(chosen) and len(set(chosen)) == 4
    assert all(np.array_equal(x, z) for x, z in zip(parts, partition.natural(groups, 4, rng(0))))


def test_natural_too_many_clients_raises():
    with pytest.raises(ConfigError, match="data.num_clients"):
        partition.natural(np.array([0, 1, 1]), 3, rng())


# ---- unbalanced -----------------------------------------------------------------------------------


def test_unbalanced_sizes_vary():
    parts = partition.unbalanced(5000, 20, 1.0, rng(0))
    sizes = np.array([len(p) for p in parts])
    assert len(parts) == 20
    assert sizes.min() >= 1 and sizes.sum() <= 5000
    assert sizes.max() > 2 * sizes.min()
    _check_disjoint(parts, 5000, cover=False)


def test_unbalanced_sigma_zero_equal():
    parts = partition.unbalanced(1000, 10, 0.0, rng(0))
    assert [len(p) for p in parts] == [100] * 10


# ---- stats ----------------------------------------------------------------------------------------


def test_partition_stats_numbers():
    y = np.array([0, 0, 1, 1, 2, 2, 3, 3, 3, 3])
    parts = (np.array([0, 1]), np.array([2, 3, 4, 5]), np.array([6, 7, 8, 9]))
    s = partition.partition_stats(parts, y)
    assert s["num_clients"] == 3 and s["examples_total"] == 10
    ex = s["examples_per_client"]
    assert ex["min"] == 2 and ex["max"] == 4
    assert ex["mean"] == pytest.approx(10 / 3)
    assert ex["std"] == pytest.approx(float(np.std([2, 4, 4])))
    lab = s["labels_per_client"]
    assert (lab["min"], lab["max"]) == (1, 2) and lab["mean"] == pytest.approx(4 / 3)
    assert "labels_per_client" not in partition.partition_stats(parts, None)
    assert "labels_per_client" not in partition.partition_stats(parts, np.zeros((10, 3)))


def test_describe_federated(mnist):
    fed = federate(mnist, "shards", 100, seed=0)
    s = describe(fed)
    assert s["num_clients"] == 100 and s["examples_total"] == 60_000
    assert s["examples_per_client"] == {"mean": 600.0, "std": 0.0, "min": 600, "max": 600}
    assert s["labels_per_client"]["min"] >= 1 and s["labels_per_client"]["max"] <= 4
    assert 1.9 <= s["labels_per_client"]["mean"] <= 2.2


# ---- bad arguments --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call, key",
    [
        (lambda: partition.iid(10, 0, rng()), "data.num_clients"),
        (lambda: partition.iid(10, 11, rng()), "data.num_clients"),
        (lambda: partition.shards(np.zeros(100, dtype=int), 10, 0, rng()), "data.shards_per_client"),
        (lambda: partition.shards(np.zeros(100, dtype=int), 10, 11, rng()), "data.shards_per_client"),
        (lambda: partition.shards(np.zeros(5, dtype=int), 6, 1, rng()), "data.num_clients"),
        (lambda: partition.dirichlet(np.zeros(100, dtype=int), 10, 0.0, rng()), "data.alpha"),
        (lambda: partition.dirichlet(np.zeros(100, dtype=int), 10, -1.0, rng()), "data.alpha"),
        (lambda: partition.unbalanced(100, 10, -0.5, rng()), "data.sigma"),
        (lambda: partition.unbalanced(100, 0, 1.0, rng()), "data.num_clients"),
        # each of these was a TypeError, a ValueError, or NaN weights cast to garbage sizes
        (lambda: partition.shards(np.zeros(100, dtype=int), 10, 1.5, rng()), "data.shards_per_client"),
        (lambda: partition.shards(np.zeros(100, dtype=int), 10, True, rng()), "data.shards_per_client"),
        (lambda: partition.dirichlet(np.zeros(100, dtype=int), 10, float("inf"), rng()), "data.alpha"),
        (lambda: partition.dirichlet(np.zeros(100, dtype=int), 10, "0.5", rng()), "data.alpha"),
        (lambda: partition.unbalanced(100, 10, 1e300, rng()), "data.sigma"),
        (lambda: partition.unbalanced(100, 10, float("nan"), rng()), "data.sigma"),
        (lambda: partition.unbalanced(100, 10, "1", rng()), "data.sigma"),
        (lambda: partition.natural(np.arange(10) % 3, 2.5, rng()), "data.num_clients"),
        (lambda: partition.natural(np.arange(10) % 3, -1, rng()), "data.num_clients"),  # was: every client
        (lambda: partition.natural(np.zeros((10, 2)), None, rng()), "natural"),
    ],
)
def test_bad_arguments_raise_config_error(call, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        call()


def _seq_dataset() -> Dataset:
    x = torch.randint(1, 5, (20, 6))
    d = ArrayData(x, x)
    return Dataset("seq", d, d, num_classes=5, train_groups=np.arange(20) % 4, ignore_index=0)


def test_federate_bad_scheme_and_sequence_labels():
    ds = _seq_dataset()
    with pytest.raises(ConfigError, match="data.partition"):
        federate(ds, "round_robin", 4, seed=0)
    with pytest.raises(ConfigError, match="sequences"):
        federate(ds, "shards", 4, seed=0)
    with pytest.raises(ConfigError, match="sequences"):
        federate(ds, "dirichlet", 4, seed=0)
    fed = federate(ds, "natural", 0, seed=0)  # 0 = every natural client
    assert fed.num_clients == 4 and list(fed.client_sizes()) == [5, 5, 5, 5]


def test_federate_natural_without_groups_raises(mnist):
    with pytest.raises(ConfigError, match="natural"):
        federate(mnist, "natural", 10, seed=0)


def test_federate_client_data(mnist):
    fed = federate(mnist, "iid", 50, seed=1)
    assert fed.num_clients == 50 and fed.partition == "iid"
    assert list(fed.client_sizes()) == [1200] * 50
    d = fed.client_data(7)
    ix = torch.as_tensor(fed.client_indices[7])
    assert torch.equal(d.x, mnist.train.x[ix]) and torch.equal(d.y, mnist.train.y[ix])
    # The same seed gives the same split; a different seed, another.
    again = federate(mnist, "iid", 50, seed=1)
    other = federate(mnist, "iid", 50, seed=2)
    assert np.array_equal(fed.client_indices[7], again.client_indices[7])
    assert not np.array_equal(fed.client_indices[7], other.client_indices[7])
