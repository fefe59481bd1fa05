"""merge_metrics: values of one kind add up, a name holding two kinds is refused (property test)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hamrah.core.errors import ConfigError
from hamrah.core.metrics import Summed, Weighted, merge_metrics

finite = st.floats(-1e6, 1e6, allow_nan=False)
metric = st.one_of(st.builds(Weighted, finite, st.floats(0, 1e6)), st.builds(Summed, finite))
metrics = st.dictionaries(st.sampled_from(["train_loss", "examples", "bytes", "steps"]), metric, max_size=4)


@settings(max_examples=200, deadline=None)
@given(metrics, metrics)
def test_merge_adds_values_of_one_kind_and_refuses_mixed_kinds(a, b):
    mixed = sorted(k for k in a.keys() & b.keys() if type(a[k]) is not type(b[k]))
    if mixed:
        with pytest.raises(ConfigError, match="expected the same reduction on every client"):
            merge_metrics(a, b)
        return
    a0, b0 = dict(a), dict(b)
    out = merge_metrics(a, b)
    assert a == a0 and b == b0  # the inputs are not changed
    assert out.keys() == a.keys() | b.keys()
    for name, value in out.items():
        if name in a and name in b:
            assert value == a[name] + b[name]
            assert value.total == a[name].total + b[name].total
        else:
            assert value == a.get(name, b.get(name))
