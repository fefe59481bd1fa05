"""Every partitioner over any labelled data set (property tests): disjoint, covering, seeded."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hamrah.core.errors import ConfigError
from hamrah.core.seeds import partition_rng
from hamrah.data.examples import Examples
from hamrah.data.partition import SCHEMES, PartitionSpec, split, split_examples
from hamrah.data.schema import Field, Schema

label_kinds = st.sampled_from(["int", "text", "bool", "float"])


@st.composite
def labelled(draw):
    """Draw labels of any kind, natural groups of any kind and a partition spec."""
    n = draw(st.integers(1, 120))
    kind = draw(label_kinds)
    raw = draw(st.lists(st.integers(0, 6), min_size=n, max_size=n))
    labels = {
        "int": np.array(raw),
        "text": np.array([f"class-{v}" for v in raw]),
        "bool": np.array(raw) % 2 == 0,
        "float": np.array(raw) * 0.25 + 0.1,
    }[kind]
    groups = np.array([f"site{v}" for v in draw(st.lists(st.integers(0, 5), min_size=n, max_size=n))])
    spec = PartitionSpec(
        draw(st.sampled_from(SCHEMES)),
        draw(st.integers(1, 12)),
        shards_per_client=draw(st.integers(1, 3)),
        alpha=draw(st.sampled_from([0.1, 0.5, 5.0])),
        sigma=draw(st.sampled_from([0.0, 0.5, 2.0])),
    )
    return labels, groups, spec


def _run(labels, groups, spec, seed):
    return split(spec, partition_rng(seed), num_examples=len(labels), labels=labels, groups=groups)


@settings(max_examples=100, deadline=None)
@given(labelled(), st.integers(0, 2**31))
def test_partitions_are_disjoint_cover_and_deterministic(case, seed):
    labels, groups, spec = case
    n = len(labels)
    try:
        parts = _run(labels, groups, spec, seed)
    except ConfigError as e:  # impossible parameters: a clear error naming the key, never a crash
        assert "data." in str(e)
        return
    if spec.scheme == "dirichlet":
        assert labels.dtype.kind not in "f", "dirichlet takes class labels only"
    together = np.concatenate(parts) if parts else np.array([], int)
    assert len(np.unique(together)) == len(together), "an example was given to two clients"
    assert together.size == 0 or (together.min() >= 0 and together.max() < n)
    for p in parts:
        assert np.all(np.diff(p) > 0) and len(p) >= 1
    k = spec.num_clients
    if spec.scheme == "natural":
        chosen = {groups[p[0]] for p in parts}
        assert len(parts) == min(k, len(set(groups)))
        assert all(len(set(groups[p])) == 1 for p in parts)  # one client = one natural group, all of it
        assert len(together) == int(np.isin(groups, list(chosen)).sum())
    else:
        assert len(parts) == k
        lost = {"iid": 0, "dirichlet": 0, "shards": k * spec.shards_per_client, "unbalanced": k}[spec.scheme]
        assert n - lost <= len(together) <= n if lost else len(together) == n
    again = _run(labels, groups, spec, seed)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again)), "same seed, same split"


@settings(max_examples=40, deadline=None)
@given(st.integers(40, 200), st.integers(2, 5), st.sampled_from(["iid", "dirichlet", "shards"]))
def test_other_seeds_give_other_splits(n, k, scheme):
    labels = np.arange(n) % 4
    a = _run(labels, None, PartitionSpec(scheme, k, alpha=5.0), 0)
    b = _run(labels, None, PartitionSpec(scheme, k, alpha=5.0), 1)
    assert not all(np.array_equal(x, y) for x, y in zip(a, b))


def test_shards_sort_real_valued_labels_dirichlet_refuses_them():
    y = np.linspace(0.0, 1.0, 100)
    parts = _run(y, None, PartitionSpec("shards", 5, shards_per_client=1), 0)
    spans = sorted((y[p].min(), y[p].max()) for p in parts)
    assert all(a[1] < b[0] for a, b in itertools.pairwise(spans)), "each shard is a contiguous range of values"
    with pytest.raises(ConfigError, match="dirichlet.*class labels"):
        _run(y, None, PartitionSpec("dirichlet", 5), 0)


@pytest.mark.parametrize(
    "spec, labels, groups, match",
    [
        (PartitionSpec("natural", 2), np.zeros(10), None, "no natural clients"),
        (PartitionSpec("shards", 2), None, None, "needs labels"),
        (PartitionSpec("dirichlet", 2), np.zeros((10, 3)), None, "one label per example"),
        (PartitionSpec("round_robin", 2), np.zeros(10), None, "expected one of iid"),
        (PartitionSpec("iid", None), np.zeros(10), None, "data.num_clients"),
    ],
)
def test_bad_requests_get_config_errors(spec, labels, groups, match):
    with pytest.raises(ConfigError, match=match):
        split(spec, partition_rng(0), num_examples=10, labels=labels, groups=groups)


def test_split_examples_uses_the_label_field_and_the_groups():
    schema = Schema(
        (Field("x", "float32"), Field("diagnosis", "int64", categories=("benign", "malignant"))), label="diagnosis"
    )
    ex = Examples.from_columns(
        {"x": np.arange(12.0), "diagnosis": ["benign"] * 6 + ["malignant"] * 6},
        schema,
        groups=np.arange(12) % 3,
        group_names=("h1", "h2", "h3"),
    )
    natural = split_examples(ex, PartitionSpec("natural", None), seed=0)
    assert [ex.take(p).groups.tolist() for p in natural] == [[0] * 4, [1] * 4, [2] * 4]
    shards = split_examples(ex, PartitionSpec("shards", 2, shards_per_client=1), seed=3)
    assert sorted(len(set(ex.take(p).labels.tolist())) for p in shards) == [1, 1]
