"""FederatedAveraging (McMahan et al. 2017, *Communication-Efficient Learning of Deep Networks
from Decentralized Data*, Algorithm 1)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from hamrah.algorithms.base import ClientResult, LocalSGD, cohort_size, weighted_mean_delta
from hamrah.core.params import Params


@dataclass(frozen=True)
class FedAvg:
    """FedAvg: each of m = max(C*K, 1) clients runs E epochs of SGD with batch size B from the
    global model; the server replaces the model by the n_k-weighted average of the client models.

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

    def server_update(self, global_params: Params, results: Sequence[ClientResult]) -> Params:
        # w_{t+1} = sum_k n_k/n w_k = w_t + sum_k n_k/n (w_k - w_t)
        mean = weighted_mean_delta(results)
        return {k: global_params[k] + mean[k] for k in global_params}
