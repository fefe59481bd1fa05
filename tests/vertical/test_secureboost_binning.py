"""Quantile binning: bins index the split thresholds exactly, missing values get their own bin; bad
input is refused clearly."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from hamrah.core.errors import ConfigError, DataError
from hamrah.vertical.binning import fit_bins

matrices = hnp.arrays(
    np.float64,
    hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=40),
    elements=st.floats(-1e6, 1e6, allow_nan=False) | st.sampled_from([0.0, 1.0, np.nan]),
)


@settings(max_examples=120, deadline=None)
@given(matrices, st.integers(2, 40))
def test_bin_le_b_is_value_le_threshold(x, max_bins):
    bins = fit_bins(x, max_bins)
    b = bins.transform(x)
    assert (bins.num_bins <= max_bins + 1).all() and (b < bins.num_bins).all()
    for f, edges in enumerate(bins.edges):
        col, missing = x[:, f], np.isnan(x[:, f])
        assert np.all(np.diff(edges) > 0) and (len(edges) == 0 or edges[-1] < col[~missing].max())
        np.testing.assert_array_equal(b[:, f] == bins.num_bins[f] - 1, missing)  # NaN: the last bin, alone
        for k in range(len(edges) + 1):  # the last candidate, threshold +inf, keeps every present value left
            np.testing.assert_array_equal((b[:, f] <= k)[~missing], col[~missing] <= bins.threshold(f, k))


def test_binary_feature_gets_one_edge():
    x = np.array([[0.0], [1.0], [1.0], [0.0]])
    bins = fit_bins(x, 32)
    assert bins.num_bins.tolist() == [3] and bins.transform(x)[:, 0].tolist() == [0, 1, 1, 0]


@pytest.mark.parametrize("max_bins", [1, 256, 3.0, True])
def test_bad_max_bins(max_bins):
    with pytest.raises(ConfigError, match="max_bins"):
        fit_bins(np.zeros((3, 2)), max_bins)


def test_infinite_and_wrong_width_are_data_errors_and_nan_is_missing():
    with pytest.raises(DataError, match="row 1, feature 0 is -inf"):
        fit_bins(np.array([[1.0], [-np.inf]]))
    x = np.array([[1.0], [np.nan], [2.0]])
    assert fit_bins(x).transform(x)[:, 0].tolist() == [0, 2, 1]
    bins = fit_bins(np.zeros((3, 2)))
    with pytest.raises(DataError, match="3 columns, expected 2"):
        bins.transform(np.zeros((3, 3)))
