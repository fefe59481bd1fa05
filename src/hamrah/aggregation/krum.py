"""Krum and Multi-Krum (Blanchard et al. 2017, *Machine Learning with Adversaries: Byzantine Tolerant
Gradient Descent*) and Bulyan (El Mhamdi et al. 2018, *The Hidden Vulnerability of Distributed
Learning in Byzantium*).

Both assume at most ``f`` malicious clients per round and treat clients equally (weights ignored).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hamrah.aggregation.base import (
    as_weights,
    check_int,
    flatten,
    require_cohort,
    unflatten,
)
from hamrah.aggregation.coordinate import coordinate_median
from hamrah.core.errors import ConfigError, NotEnoughClients
from hamrah.core.params import Params


def squared_distances(x: torch.Tensor) -> torch.Tensor:
    """Return the ``[K, K]`` matrix of squared L2 distances between the rows of ``x`` (float64).

    One Gram matrix of the centred rows (centring keeps float32 cancellation small); Bulyan reuses
    it for every subset instead of recomputing distances.
    """
    xc = x - x.mean(0, keepdim=True)
    g = (xc @ xc.t()).double()
    sq = g.diagonal()
    return (sq[:, None] + sq[None, :] - 2 * g).clamp(min=0).fill_diagonal_(0)


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
        check_int(self.name, "f", self.f, 0)
        check_int(self.name, "m", self.m, 1)

    def check(self, cohort_size: int) -> None:
        """Refuse K <= 2f + 2 (Blanchard et al.'s condition) or m > K - f."""
        require_cohort(self.name, cohort_size, 2 * self.f + 3, f"Krum with f = {self.f} (K > 2f + 2)")
        if self.m > cohort_size - self.f:
            raise ConfigError(f"aggregator {self.name}: m = {self.m} averages more than the K - f = "
                              f"{cohort_size - self.f} clients assumed honest")

    def __call__(self, deltas: list[Params], weights: list[float]) -> Params:
        x, spec = flatten(deltas)
        as_weights(weights, len(deltas))
        if len(deltas) < 2 * self.f + 3:
            raise NotEnoughClients(f"aggregator {self.name}: {len(deltas)} deltas, Krum with f = {self.f} needs {2 * self.f + 3}")
        best = krum_scores(x, self.f).argsort()[: min(self.m, len(deltas) - self.f)]
        return unflatten(x[best].mean(0), spec)


@dataclass(frozen=True)
class Bulyan:
    """Bulyan: pick theta = K - 2f deltas by repeated Krum, then per coordinate average the
    beta = theta - 2f values closest to the coordinate's median.

    Tolerance: f malicious clients when K >= 4f + 3.

    Example:
        >>> import torch
        >>> vals = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 90.0)
        >>> Bulyan(f=1)([{"w": torch.tensor([v])} for v in vals], [1] * 7)["w"]
        tensor([0.2000])
    """

    f: int
    name: str = "bulyan"

    def __post_init__(self) -> None:
        check_int(self.name, "f", self.f, 0)

    def check(self, cohort_size: int) -> None:
        """Refuse K < 4f + 3 (El Mhamdi et al.'s condition)."""
        require_cohort(self.name, cohort_size, 4 * self.f + 3, f"Bulyan with f = {self.f} (K >= 4f + 3)")

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
            best = int(krum_scores_from(d2[idx][:, idx], f).argmin())
            chosen.append(remaining.pop(best))
        sel = x[chosen].t().contiguous()  # [D, theta]
        med = coordinate_median(sel.t())
        beta = len(chosen) - 2 * f
        closest = (sel - med[:, None]).abs().argsort(1)[:, :beta]
        return unflatten(sel.gather(1, closest).mean(1), spec)
