"""FedProx (Li et al. 2020, *Federated Optimization in Heterogeneous Networks*, MLSys; Algorithm 2)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from hamrah.algorithms.base import (
    GradientTransform,
    LocalSGD,
    NoState,
    Stateless,
    apply_delta,
    cohort_size,
    mean_delta,
)
from hamrah.algorithms.transforms import Proximal
from hamrah.core.aggregate import Aggregate
from hamrah.core.numbers import check_number
from hamrah.core.params import Params


@dataclass(frozen=True)
class FedProx(Stateless):
    """FedProx: clients minimise F_k(w) + mu/2 ||w - w_t||^2 by local SGD; the server averages as FedAvg.

    Partial work is accepted (a straggler's fewer steps are kept, ``accepts_partial_work``), which is
    how the paper tolerates systems heterogeneity. With mu = 0 and no stragglers this is FedAvg.

    Example:
        >>> FedProx(0.1, LocalSGD(20, 10, 0.01), mu=1.0).name
        'fedprox'
    """

    client_fraction: float
    local: LocalSGD
    mu: float = 0.01
    name: str = "fedprox"
    accepts_partial_work: ClassVar[bool] = True

    def __post_init__(self) -> None:
        check_number("algorithm.mu", self.mu, 0.0)

    def cohort_size(self, population: int) -> int:
        return cohort_size(self.client_fraction, population)

    def local_plan(self) -> LocalSGD:
        return self.local

    def local_transforms(
        self, global_params: Params, broadcast: Params | None, client_state: Params | None
    ) -> list[GradientTransform]:
        """Return the proximal gradient mu (w - w_t) (none when mu = 0)."""
        return [Proximal(self.mu, global_params)] if self.mu > 0 else []

    def apply(self, params: Params, aggregate: Aggregate, server_state: NoState) -> tuple[Params, NoState]:
        """Return w + mean_k(delta_k; n_k): the n_k-weighted mean of the local models, stragglers included."""
        return apply_delta(params, mean_delta(aggregate)), server_state
