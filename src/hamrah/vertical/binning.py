"""Quantile binning of one party's features, done locally before vertical tree training.

Each feature gets at most ``max_bins`` bins from the quantiles of its values (as XGBoost's ``hist``
method and SecureBoost, Cheng et al. 2021, *SecureBoost: A Lossless Federated Learning Framework*,
do). A feature's split candidates are its bin edges: bin ``b`` holds the values ``x`` with
``edges[b-1] < x <= edges[b]``, so the split "bin <= b" is the split "x <= edges[b]". Edges never
include the feature's largest value. Missing values (NaN) fall in one more bin after the last, the
missing bin, so a split can send them either way (XGBoost's learned default direction); the split
"bin <= len(edges)" (threshold +inf) separates the missing values from all others. The edges stay
with the party that owns the feature: other parties only ever see bin indices' effects.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hamrah.core.errors import ConfigError, DataError

MAX_BINS_LIMIT = 255  # bin indices, the missing bin included, are stored as uint8


def _check_features(x: np.ndarray, what: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 2:
        raise DataError(f"{what}: expected a 2-D feature matrix, got shape {arr.shape}")
    if np.isinf(arr).any():
        row, col = np.argwhere(np.isinf(arr))[0]
        raise DataError(
            f"{what}: row {row}, feature {col} is {arr[row, col]} (expected finite numbers, or NaN for a missing value)"
        )
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
        """Return the number of bins of each feature: ``len(edges) + 1`` and the missing bin."""
        return np.array([len(e) + 2 for e in self.edges], dtype=np.int64)

    def transform(self, x: np.ndarray) -> np.ndarray:
        """Return the bin index of every value, a ``uint8`` matrix of the shape of ``x``.

        NaN goes to the feature's missing bin (``len(edges) + 1``).

        Raises:
            DataError: ``x`` is not a matrix with one column per feature, or holds an infinity.
        """
        arr = _check_features(x, "features")
        if arr.shape[1] != len(self.edges):
            raise DataError(f"features: {arr.shape[1]} columns, expected {len(self.edges)} (the binned schema)")
        out = np.empty(arr.shape, dtype=np.uint8)
        for j, e in enumerate(self.edges):
            col = arr[:, j]
            out[:, j] = np.where(np.isnan(col), len(e) + 1, np.searchsorted(e, col, side="left"))
        return out

    def threshold(self, feature: int, bin_index: int) -> float:
        """Return the value threshold of the split "bin <= bin_index" of ``feature`` (+inf past the last edge)."""
        e = self.edges[feature]
        return float(e[bin_index]) if bin_index < len(e) else float("inf")


def fit_bins(x: np.ndarray, max_bins: int = 32) -> QuantileBins:
    """Return quantile bin edges of every column of ``x``.

    Args:
        x: ``rows x features`` matrix, NaN for a missing value.
        max_bins: at most this many bins per feature (2..255), the missing bin aside.

    Returns:
        The edges: the distinct values among the quantiles ``i / max_bins`` (``i = 1..max_bins-1``)
        of each column's present values, below the column's maximum; a column with few distinct
        values gets one edge per value but the last (so binary features get one edge).

    Raises:
        ConfigError: ``max_bins`` outside 2..255.
        DataError: ``x`` is not a 2-D matrix, or holds an infinity.
    """
    if isinstance(max_bins, bool) or not isinstance(max_bins, int) or not 2 <= max_bins <= MAX_BINS_LIMIT:
        raise ConfigError(f"max_bins: expected an integer in 2..{MAX_BINS_LIMIT}, got {max_bins!r}")
    arr = _check_features(x, "features")
    edges = []
    for j in range(arr.shape[1]):
        col = arr[:, j][~np.isnan(arr[:, j])]
        distinct = np.unique(col)
        if len(distinct) <= max_bins:
            cand = distinct[:-1]
        else:
            cand = np.unique(np.quantile(col, np.arange(1, max_bins) / max_bins, method="inverted_cdf"))
            cand = cand[cand < distinct[-1]]
        edges.append(np.ascontiguousarray(cand, dtype=np.float64))
    return QuantileBins(tuple(edges))
