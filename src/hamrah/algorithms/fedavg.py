"""FederatedAveraging (McMahan et al. 2017, *Communication-Efficient Learning of Deep Networks
from Decentralized Data*, Algorithm 1)."""

from __future__ import annotations

from dataclasses import dataclass

from hamrah.algorithms.base import LocalSGD, NoState, Stateless, apply_delta, cohort_size, mean_delta
from hamrah.core.aggregate import Aggregate
from hamrah.core.params import Params


@dataclass(frozen=True)
class FedAvg(Stateless):
    """FedAvg: each of m = max(C*K, 1) clients runs E epochs of SGD with batch size B from the
    global model; the server replaces the model by the n_k-weighted average of the client models.

    Stragglers' partial work is dropped (``accepts_partial_work = False``), as in Li et al. 2020's
    FedAvg baseline.

    Example:
        >>> algo = FedAvg(client_fraction=0.1, local=LocalSGD(epochs=1, batch_size=10, lr=0.1))
        >>> algo.cohort_size(100)
        10
    """

    client_fraction: float
    local: LocalSGD
    name: str = "fedavg"

    def cohort_size(self, population: int) -> int:
        return cohort_size(self.client_fraction, population)

    def local_plan(self) -> LocalSGD:
        return self.local

    def apply(self, params: Params, aggregate: Aggregate, server_state: NoState) -> tuple[Params, NoState]:
        """Return w + mean_k(delta_k; n_k) (= sum_k n_k/n w_k for the weighted mean) and the unchanged state."""
        return apply_delta(params, mean_delta(aggregate)), server_state
