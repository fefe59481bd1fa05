"""A device's store check against the plan, and a cross-silo site's held-out split."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hamrah.core.errors import DataError
from hamrah.data.federated import ArrayData
from hamrah.device.site import check_store, holdout
from hamrah.models import ModelSpec
from hamrah.transport.plan import Plan


def _plan(shape=(4,), classes=3, ignore_index=None) -> Plan:
    return Plan("train", 1, {"name": "fedavg"}, ModelSpec("logreg", shape, classes, False, 8), 0, ignore_index)


def test_check_store_passes_a_fitting_store():
    check_store(ArrayData(torch.zeros(5, 4), torch.tensor([0, 1, 2, 2, 0])), _plan())


@pytest.mark.parametrize(
    "data, match",
    [
        (ArrayData(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long)), "holds no examples .*expected at least one"),
        (ArrayData(torch.zeros(5, 6), torch.zeros(5, dtype=torch.long)), r"shape \(6,\); the plan's model 'logreg'"),
        (ArrayData(torch.zeros(2, 4), torch.tensor([0, 3])), r"labels span 0..3; .*expected labels 0..2"),
        (ArrayData(torch.zeros(2, 4), torch.tensor([-1, 1])), r"labels span -1..1"),
    ],
)
def test_check_store_names_the_mismatch_and_what_was_expected(data, match):
    with pytest.raises(DataError, match=match):
        check_store(data, _plan())


def test_check_store_ignores_padding_targets():
    check_store(ArrayData(torch.zeros(2, 4), torch.tensor([[0, -1], [2, -1]])), _plan(ignore_index=-1))


@settings(max_examples=50, deadline=None)
@given(n=st.integers(2, 300), fraction=st.floats(0.01, 0.99), seed=st.integers(0, 5), key=st.integers(0, 9))
def test_holdout_is_a_fixed_partition_with_both_sides_non_empty(n, fraction, seed, key):
    data = ArrayData(torch.arange(n, dtype=torch.float32)[:, None], torch.arange(n))
    held, rest = holdout(data, fraction, seed, key)
    assert len(held) >= 1 and len(rest) >= 1 and len(held) + len(rest) == n
    assert sorted(held.y.tolist() + rest.y.tolist()) == list(range(n))  # disjoint, covers every example
    assert torch.equal(holdout(data, fraction, seed, key)[0].y, held.y)  # the same split every round
    assert torch.equal(held.x[:, 0].long(), held.y)  # inputs stay with their labels
