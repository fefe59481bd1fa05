"""Per-party feature transforms of vertical LR: the rank-Gauss (quantile-normal) map.

Vertical LR trains on the second-order Taylor expansion of the logistic loss at 0 (``lr_common``),
whose minimiser is a least-squares fit of the labels: close to logistic regression when each class's
features are roughly Gaussian, far from it on skewed, heavy-tailed columns (default credit's bill and
payment amounts). Mapping every column through its own empirical CDF and then the inverse normal CDF
(a rank-Gauss or quantile-normal transform, as scikit-learn's ``QuantileTransformer(output_distribution
="normal")``) removes the skew and the tails before standardisation. It is column-wise, so each party
fits it on its own columns and nothing leaves the party; a central model on the joined table sees
exactly the same features (the benchmark trains its sklearn baseline on them).

Who sees what: the quantile table of a column is part of its owner's model (kept with its weights and
checkpoints, like the mean and deviation); no other party sees it.
"""

from __future__ import annotations

import numpy as np
from scipy import special

from hamrah.core.errors import ConfigError, DataError

TRANSFORMS = ("standard", "quantile")
BOUNDS = 1e-7  # the uniform value is kept in [BOUNDS, 1 - BOUNDS] before the inverse normal CDF
__all__ = ["TRANSFORMS", "check_transform", "quantile_fit", "quantile_normal"]


def check_transform(name: object) -> None:
    """Refuse an unknown transform name.

    Raises:
        ConfigError: naming the value and the ones there are.
    """
    if name not in TRANSFORMS:
        raise ConfigError(f"lr.transform = {name!r}: expected one of {', '.join(TRANSFORMS)}")


def quantile_fit(x: np.ndarray, max_quantiles: int = 1000) -> np.ndarray:
    """Return the quantile table of each column: shape ``(q, columns)``, non-decreasing down each column.

    Args:
        x: the party's training features ``(rows, columns)``, finite.
        max_quantiles: at most this many quantiles (``q = min(max_quantiles, rows)``).

    Raises:
        DataError: ``x`` is not a finite 2-D matrix with at least one row.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or len(x) == 0 or not np.all(np.isfinite(x)):
        raise DataError(f"quantile transform: expected a finite matrix with rows, got shape {x.shape}")
    refs = np.linspace(0, 1, min(max_quantiles, len(x))) * 100  # as scikit-learn, to the last bit
    return np.maximum.accumulate(np.percentile(x, refs, axis=0), axis=0)


def quantile_normal(x: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Map each column through its empirical CDF (``table``) and the inverse normal CDF.

    Ties and flat stretches of the table get the middle of their CDF range (interpolating from both
    ends, as scikit-learn does), values at or beyond the ends map to ``BOUNDS`` / ``1 - BOUNDS``.

    Args:
        x: features ``(rows, columns)``, finite.
        table: :func:`quantile_fit`'s output for the same columns.

    Returns:
        The transformed features, finite, non-decreasing in each column's input.

    Raises:
        DataError: ``x`` and ``table`` disagree on the columns, or ``x`` is not finite.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or table.ndim != 2 or x.shape[1] != table.shape[1] or not np.all(np.isfinite(x)):
        raise DataError(f"quantile transform: expected a finite matrix with {table.shape[1]} columns, got {x.shape}")
    refs = np.linspace(0, 1, len(table))
    out = np.empty_like(x)
    for j in range(x.shape[1]):
        q, col = table[:, j], x[:, j]
        with np.errstate(invalid="ignore", over="ignore"):  # NaN where a slope overflows: handled below
            u = 0.5 * (np.interp(col, q, refs) - np.interp(-col, -q[::-1], -refs[::-1]))
        bad = np.isnan(u)  # a gap between quantiles so small (subnormal) that interpolation's slope overflowed
        if bad.any():  # a value at tied quantiles gets their middle, one inside such a gap the gap's middle
            lo, hi = np.searchsorted(q, col[bad], "left"), np.searchsorted(q, col[bad], "right")
            tied = lo < hi
            first = np.where(tied, lo, np.clip(lo - 1, 0, len(q) - 1))
            last = np.where(tied, hi - 1, np.clip(lo, 0, len(q) - 1))
            u[bad] = 0.5 * (refs[first] + refs[last])
        u[col >= q[-1]] = 1.0
        u[col <= q[0]] = 0.0  # after the upper end, as scikit-learn: a constant column maps low
        out[:, j] = special.ndtri(np.clip(u, BOUNDS, 1 - BOUNDS))
    return out
