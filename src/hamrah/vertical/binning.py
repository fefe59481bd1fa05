"""Quantile binning of one party's features, done locally before vertical tree training.

Each feature gets at most ``max_bins`` bins from the quantiles of its values (as XGBoost's ``hist``
method and SecureBoost, Cheng et al. 2021, *SecureBoost: A Lossless Federated Learning Framework*,
do). A feature's split candidates are its bin edges: bin ``b`` holds the values ``x`` with
``edges[b-1] < x <= edges[b]``, so the split "bin <= b" is the split "x <= edges[b]". Edges never
include the feature's largest value (a split there would send every row left). The edges stay with
the party that owns the feature: other parties only ever see bin indices' effects.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hamrah.core.errors import ConfigError, DataError

MAX_BINS_LIMIT = 256  # bin indices are stored as uint8


def _check_features(x: np.ndarray, what: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 2:
        raise DataError(f"{what}: expected a 2-D feature matrix, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        row, col = np.argwhere(~np.isfinite(arr))[0]
        raise DataError(f"{what}: row {row}, feature {col} is {arr[row, col]} (expected finite numbers)")
    return arr


@dataclass(frozen=True)
class QuantileBins:
    """Bin edges of each feature of one party.

    Attributes:
        edges: per feature, the sorted split thresholds (at most ``max_bins - 1`` of them).
    """

    edges: tuple[np.ndarray, ...]

    @property
    def num_bins(self) -> np.ndarray:
        """Return the number of bins of each feature (``len(edges) + 1``)."""
        return np.array([len(e) + 1 for e in self.edges], dtype=np.int64)

    def transform(self, x: np.ndarray) -> np.ndarray:
        """Return the bin index of every value, a ``uint8`` matrix of the shape of ``x``.

        Raises:
            DataError: ``x`` is not a finite matrix with one column per feature.
        """
        arr = _check_features(x, "features")
        if arr.shape[1] != len(self.edges):
            raise DataError(f"features: {arr.shape[1]} columns, expected {len(self.edges)} (the binned schema)")
        out = np.empty(arr.shape, dtype=np.uint8)
        for j, e in enumerate(self.edges):
            out[:, j] = np.searchsorted(e, arr[:, j], side="left")
        return out

    def threshold(self, feature: int, bin_index: int) -> float:
        """Return the value threshold of the split "bin <= bin_index" of ``feature``."""
        return float(self.edges[feature][bin_index])


def fit_bins(x: np.ndarray, max_bins: int = 32) -> QuantileBins:
    """Return quantile bin edges of every column of ``x``.

    Args:
        x: ``rows x features`` finite matrix.
        max_bins: at most this many bins per feature (2..256).

    Returns:
        The edges: the distinct values among the quantiles ``i / max_bins`` (``i = 1..max_bins-1``)
        of each column, below the column's maximum; a column with few distinct values gets one
        edge per value but the last (so binary features get one edge).

    Raises:
        ConfigError: ``max_bins`` outside 2..256.
        DataError: ``x`` is not a finite 2-D matrix.
    """
    if isinstance(max_bins, bool) or not isinstance(max_bins, int) or not 2 <= max_bins <= MAX_BINS_LIMIT:
        raise ConfigError(f"max_bins: expected an integer in 2..{MAX_BINS_LIMIT}, got {max_bins!r}")
    arr = _check_features(x, "features")
    edges = []
    for j in range(arr.shape[1]):
        col = arr[:, j]
        distinct = np.unique(col)
        if len(distinct) <= max_bins:
            cand = distinct[:-1]
        else:
            cand = np.unique(np.quantile(col, np.arange(1, max_bins) / max_bins, method="inverted_cdf"))
            cand = cand[cand < distinct[-1]]
        edges.append(np.ascontiguousarray(cand, dtype=np.float64))
    return QuantileBins(tuple(edges))
