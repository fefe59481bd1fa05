"""The weighted mean (McMahan et al. 2017): FedAvg's own rule, the default, with no robustness."""

from __future__ import annotations

from dataclasses import dataclass

from hamrah.aggregation.base import as_weights, finite_rows, flatten, unflatten
from hamrah.core.params import Params


@dataclass(frozen=True)
class WeightedMean:
    """Return sum_k w_k delta_k / sum_k w_k (w_k = n_k, the client's examples).

    One client can move the mean arbitrarily far: its breakdown point is 0. Non-finite deltas are
    dropped (the simulator and server refuse them earlier); the sum is taken in float64.

    Example:
        >>> import torch
        >>> WeightedMean()([{"w": torch.tensor([0.0])}, {"w": torch.tensor([3.0])}], [1, 2])["w"]
        tensor([2.])
    """

    name: str = "mean"

    def check(self, cohort_size: int) -> None:
        """Accept any cohort of at least one client."""

    def __call__(self, deltas: list[Params], weights: list[float]) -> Params:
        x, spec = flatten(deltas)
        x, w = finite_rows(x, as_weights(weights, len(deltas)))
        return unflatten(w.double() @ x.double(), spec)
