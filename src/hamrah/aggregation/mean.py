"""The weighted mean (McMahan et al. 2017): FedAvg's own rule, the default, with no robustness."""

from __future__ import annotations

from dataclasses import dataclass

from hamrah.aggregation.base import as_weights
from hamrah.core.aggregate import weighted_mean
from hamrah.core.errors import NotEnoughClients
from hamrah.core.params import Params
from hamrah.core.updates import first_non_finite


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

    def tolerance(self, cohort_size: int) -> None:
        """None: no promise (one client moves the mean anywhere)."""
        return None

    def __call__(self, deltas: list[Params], weights: list[float]) -> Params:
        """Return the weighted mean of the finite deltas (:func:`hamrah.core.aggregate.weighted_mean`, the
        one weighted mean of the code base).

        Raises:
            NotEnoughClients: no delta, none finite, or every finite one has weight 0.
            ConfigError: the weights do not match the deltas or are not valid.
        """
        if not deltas:
            raise NotEnoughClients("no client delta to aggregate")
        w = as_weights(weights, len(deltas))
        keep = [i for i, d in enumerate(deltas) if first_non_finite(d) is None]
        if not keep:
            raise NotEnoughClients(
                f"none of the {len(deltas)} client deltas is finite: expected at least one "
                "without NaN or infinite values"
            )
        kept = [float(w[i]) for i in keep]
        if sum(kept) <= 0:
            raise NotEnoughClients("every finite client delta has weight 0: expected a positive weight on one")
        return weighted_mean([deltas[i] for i in keep], kept)
