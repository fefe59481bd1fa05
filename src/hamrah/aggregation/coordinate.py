"""Coordinate-wise median and trimmed mean (Yin et al. 2018, *Byzantine-Robust Distributed
Learning: Towards Optimal Statistical Rates*).

Both treat the clients equally and ignore the weights: the weights are what clients report about
themselves, so an attacker could inflate them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from hamrah.aggregation.base import as_weights, finite_rows, flatten, unflatten
from hamrah.core.errors import ConfigError, NotEnoughClients
from hamrah.core.numbers import check_number
from hamrah.core.params import Params


def sorted_columns(x: torch.Tensor) -> torch.Tensor:
    """Return ``x``'s columns sorted, as a ``[D, K]`` matrix (sorting contiguous rows of K is faster
    than sorting down the K rows of ``[K, D]``: measured 4x on 20 x 199,210)."""
    return x.t().contiguous().sort(1).values


def coordinate_median(x: torch.Tensor) -> torch.Tensor:
    """Return the median of each column of ``x`` (the mean of the two middle values for even K,
    taken in float64 so that two values near the float32 limit do not overflow)."""
    s = sorted_columns(x)
    k = x.shape[0]
    if k % 2:
        return s[:, k // 2]
    return (0.5 * (s[:, k // 2 - 1].double() + s[:, k // 2].double())).to(x.dtype)


@dataclass(frozen=True)
class Median:
    """Coordinate-wise median of the deltas.

    Tolerance: fewer than half of the cohort malicious (a majority moves every coordinate).
    Promise (tested over arbitrary finite inputs, ``tests/aggregation/test_properties.py``): with
    f < K/2 attackers, every coordinate of the result lies between the smallest and the largest
    honest value of that coordinate. Non-finite deltas are dropped first (they count as absent).

    Example:
        >>> import torch
        >>> Median()([{"w": torch.tensor([v])} for v in (1.0, 2.0, 100.0)], [1, 1, 1])["w"]
        tensor([2.])
    """

    name: str = "median"

    def check(self, cohort_size: int) -> None:
        """Accept any cohort of at least one client (one client is its own median)."""

    def tolerance(self, cohort_size: int) -> int:
        """Return (K - 1) // 2: the promise needs f < K / 2."""
        return (cohort_size - 1) // 2

    def __call__(self, deltas: list[Params], weights: list[float]) -> Params:
        x, spec = flatten(deltas)
        as_weights(weights, len(deltas))
        x, _ = finite_rows(x)
        return unflatten(coordinate_median(x), spec)


@dataclass(frozen=True)
class TrimmedMean:
    """Coordinate-wise beta-trimmed mean: drop the floor(beta*K) largest and smallest values of
    each coordinate, average the rest.

    Tolerance: up to floor(beta*K) malicious clients.
    Promise (tested over arbitrary finite inputs): with f <= floor(beta*K) attackers, every
    coordinate of the result lies between the smallest and the largest honest value of that
    coordinate (the mean is taken in float64, so it cannot overflow). Non-finite deltas are dropped
    first and K is the number left.

    Example:
        >>> import torch
        >>> TrimmedMean(0.25)([{"w": torch.tensor([v])} for v in (-50.0, 1.0, 3.0, 90.0)], [1] * 4)["w"]
        tensor([2.])
    """

    beta: float = 0.1
    name: str = "trimmed_mean"

    def __post_init__(self) -> None:
        check_number(f"aggregator {self.name}: beta", self.beta, 0.0, 0.5)

    def trimmed(self, cohort_size: int) -> int:
        """Return the number of values cut from each end of a coordinate for ``cohort_size`` clients."""
        return int(math.floor(self.beta * cohort_size + 1e-9))

    def check(self, cohort_size: int) -> None:
        """Refuse a cohort where trimming 2 * floor(beta*K) values leaves none."""
        if cohort_size - 2 * self.trimmed(cohort_size) < 1:
            raise ConfigError(f"aggregator {self.name}: beta = {self.beta} trims every one of {cohort_size} clients")

    def tolerance(self, cohort_size: int) -> int:
        """Return floor(beta * K): the promise needs every attacker's value trimmed."""
        return self.trimmed(cohort_size)

    def __call__(self, deltas: list[Params], weights: list[float]) -> Params:
        x, spec = flatten(deltas)
        as_weights(weights, len(deltas))
        x, _ = finite_rows(x)
        n = x.shape[0]
        k = self.trimmed(n)
        if n - 2 * k < 1:
            raise NotEnoughClients(f"aggregator {self.name}: {n} finite deltas, beta = {self.beta} trims all of them")
        s = sorted_columns(x)
        return unflatten(s[:, k : n - k].double().mean(1), spec)
