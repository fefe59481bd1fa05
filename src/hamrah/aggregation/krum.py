"""Krum and Multi-Krum (Blanchard et al. 2017, *Machine Learning with Adversaries: Byzantine Tolerant
Gradient Descent*) and Bulyan (El Mhamdi et al. 2018, *The Hidden Vulnerability of Distributed
Learning in Byzantium*).

Both assume at most ``f`` malicious clients per round and treat clients equally (weights ignored).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hamrah.aggregation.base import as_weights, flatten, require_cohort, unflatten
from hamrah.aggregation.coordinate import coordinate_median
from hamrah.core.errors import ConfigError, NotEnoughClients
from hamrah.core.numbers import check_int
from hamrah.core.params import Params


def squared_distances(x: torch.Tensor) -> torch.Tensor:
    """Return the ``[K, K]`` matrix of squared L2 distances between the rows of ``x``, in float64.

    One float64 Gram matrix of the rows centred on the coordinate-wise median of the finite rows;
    Bulyan reuses it for every subset instead of recomputing distances. Float64 cannot overflow on
    float32 inputs (at most 1.2e77 per coordinate), and the median centre keeps the honest rows, a
    majority, near the origin, so their distances do not cancel against a far attacker's norm (the
    mean centre moved them 1e17 away when one client sent 1e18). A row holding NaN or an infinity is
    at distance +inf from every other row, so its Krum score is +inf: it is never selected while
    finite rows remain.

    Args:
        x: the ``[K, D]`` client deltas.

    Returns:
        The symmetric ``[K, K]`` float64 matrix, zero on the diagonal.
    """
    finite = torch.isfinite(x).all(1)
    xd = torch.where(finite[:, None], x.double(), torch.zeros((), dtype=torch.float64))
    if bool(finite.any()):
        xd = torch.where(finite[:, None], xd - coordinate_median(xd[finite]), xd)
    g = xd @ xd.t()
    sq = g.diagonal()
    d2 = (sq[:, None] + sq[None, :] - 2 * g).clamp(min=0)
    bad = ~finite
    d2[bad, :] = torch.inf
    d2[:, bad] = torch.inf
    return d2.fill_diagonal_(0)


def krum_scores_from(d2: torch.Tensor, f: int) -> torch.Tensor:
    """Return each row's Krum score from squared distances ``d2``: the sum over its K - f - 2
    nearest other rows (at least one, so Bulyan's last selections stay defined)."""
    neighbours = max(d2.shape[0] - f - 2, 1)
    # column 0 of each sorted row is the row itself (distance 0)
    return d2.sort(1).values[:, 1 : neighbours + 1].sum(1)


def krum_scores(x: torch.Tensor, f: int) -> torch.Tensor:
    """Return each row's Krum score: the sum of squared distances to its K - f - 2 nearest rows."""
    return krum_scores_from(squared_distances(x), f)


@dataclass(frozen=True)
class Krum:
    """Krum (m = 1) or Multi-Krum (m > 1): average the m deltas with the lowest Krum score.

    Tolerance: f malicious clients when K > 2f + 2.
    Promise (tested over arbitrary finite inputs): with at most f attackers, every selected delta
    lies within sqrt(K - f - 2) * D_h of some honest delta, where D_h is the largest distance
    between two honest deltas (its score is at most the best honest score, at most (K - f - 2) D_h^2,
    and one of its K - f - 2 nearest is honest). So the result (the mean of the selected) lies within
    (sqrt(K - f - 2) + 1) D_h of the honest mean. Not a per-coordinate bound: Krum may pick an
    attacker that sits close to the honest cluster. A non-finite delta scores +inf and is never picked.

    Example:
        >>> import torch
        >>> vals = (0.0, 0.1, 0.2, 0.35, 0.5, 50.0)
        >>> Krum(f=1)([{"w": torch.tensor([v])} for v in vals], [1] * 6)["w"]
        tensor([0.2000])
    """

    f: int
    m: int = 1
    name: str = "krum"

    def __post_init__(self) -> None:
        check_int(f"aggregator {self.name}: f", self.f, 0)
        check_int(f"aggregator {self.name}: m", self.m, 1)

    def check(self, cohort_size: int) -> None:
        """Refuse K <= 2f + 2 (Blanchard et al.'s condition) or m > K - f."""
        require_cohort(self.name, cohort_size, 2 * self.f + 3, f"Krum with f = {self.f} (K > 2f + 2)")
        if self.m > cohort_size - self.f:
            raise ConfigError(
                f"aggregator {self.name}: m = {self.m} averages more than the K - f = "
                f"{cohort_size - self.f} clients assumed honest"
            )

    def tolerance(self, cohort_size: int) -> int:
        """Return f, the attackers the rule is told to expect (:meth:`check` refuses a cohort too small for it)."""
        return self.f

    def __call__(self, deltas: list[Params], weights: list[float]) -> Params:
        x, spec = flatten(deltas)
        as_weights(weights, len(deltas))
        if len(deltas) < 2 * self.f + 3:
            raise NotEnoughClients(
                f"aggregator {self.name}: {len(deltas)} deltas, Krum with f = {self.f} needs {2 * self.f + 3}"
            )
        scores = krum_scores(x, self.f)
        best = scores.argsort()[: min(self.m, len(deltas) - self.f)]
        best = best[torch.isfinite(scores[best])]  # never a non-finite row, even past f of them
        if len(best) == 0:
            raise NotEnoughClients(f"aggregator {self.name}: no finite delta to select among {len(deltas)}")
        return unflatten(x[best].double().mean(0), spec)


@dataclass(frozen=True)
class Bulyan:
    """Bulyan: pick theta = K - 2f deltas by repeated Krum, then per coordinate average the
    beta = theta - 2f values closest to the coordinate's median.

    Tolerance: f malicious clients when K >= 4f + 3.
    Promise (tested over arbitrary finite inputs): with at most f attackers, every coordinate of the
    result lies in [lo - W, hi + W], where lo and hi are the smallest and largest honest values of
    that coordinate and W = hi - lo. (The median of the theta selected values is within [lo, hi]; a
    kept value is no farther from it than any of the 2f values left out, at least f of which are
    honest.) The repeated Krum uses K - f - 2 nearest neighbours but "at least one", so the last
    selections, among fewer than f + 3 remaining deltas, stay defined.

    Example:
        >>> import torch
        >>> vals = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 90.0)
        >>> Bulyan(f=1)([{"w": torch.tensor([v])} for v in vals], [1] * 7)["w"]
        tensor([0.2000])
    """

    f: int
    name: str = "bulyan"

    def __post_init__(self) -> None:
        check_int(f"aggregator {self.name}: f", self.f, 0)

    def check(self, cohort_size: int) -> None:
        """Refuse K < 4f + 3 (El Mhamdi et al.'s condition)."""
        require_cohort(self.name, cohort_size, 4 * self.f + 3, f"Bulyan with f = {self.f} (K >= 4f + 3)")

    def tolerance(self, cohort_size: int) -> int:
        """Return f, the attackers the rule is told to expect (:meth:`check` refuses a cohort too small for it)."""
        return self.f

    def __call__(self, deltas: list[Params], weights: list[float]) -> Params:
        x, spec = flatten(deltas)
        as_weights(weights, len(deltas))
        n, f = len(deltas), self.f
        if n < 4 * f + 3:
            raise NotEnoughClients(f"aggregator {self.name}: {n} deltas, Bulyan with f = {f} needs {4 * f + 3}")
        d2 = squared_distances(x)
        remaining = list(range(n))
        chosen = []
        for _ in range(n - 2 * f):
            idx = torch.tensor(remaining)
            scores = krum_scores_from(d2[idx][:, idx], f)
            best = int(scores.argmin())
            if not bool(torch.isfinite(scores[best])):
                raise NotEnoughClients(f"aggregator {self.name}: more than f = {f} of {n} deltas are not finite")
            chosen.append(remaining.pop(best))
        sel = x[chosen].t().contiguous()  # [D, theta]
        med = coordinate_median(sel.t())
        beta = len(chosen) - 2 * f
        closest = (sel - med[:, None]).abs().argsort(1)[:, :beta]
        return unflatten(sel.gather(1, closest).double().mean(1), spec)
