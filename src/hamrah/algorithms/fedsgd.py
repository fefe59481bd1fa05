"""FederatedSGD (McMahan et al. 2017, section 2): one full-batch gradient per client, averaged,
one server step."""

from __future__ import annotations

from dataclasses import dataclass

from hamrah.algorithms.base import (
    ExampleDP,
    LocalSGD,
    NoState,
    Stateless,
    apply_delta,
    check_step_size,
    cohort_size,
    mean_delta,
)
from hamrah.core.aggregate import Aggregate
from hamrah.core.params import Params


@dataclass(frozen=True)
class FedSGD(Stateless):
    """FedSGD: each client computes g_k = grad F_k(w_t) over all its data; the server steps
    w_{t+1} = w_t - lr * sum_k n_k/n g_k.

    The client half is one full-batch step of unit size, so the reported delta is -g_k; the server
    applies ``lr``. This equals FedAvg with E = 1, B = inf and local learning rate ``lr``.
    """

    client_fraction: float
    lr: float
    example_dp: ExampleDP | None = None  # the full-batch gradient with DP-SGD's clipping and noise
    name: str = "fedsgd"

    def __post_init__(self) -> None:
        check_step_size("algorithm.lr", self.lr)

    def cohort_size(self, population: int) -> int:
        return cohort_size(self.client_fraction, population)

    def local_plan(self) -> LocalSGD:
        return LocalSGD(epochs=1, batch_size=None, lr=1.0, example_dp=self.example_dp)

    def buffer_problem(self) -> str | None:
        return None if self.lr <= 1 else f"lr = {self.lr} > 1 extrapolates past the clients' mean"

    def apply(self, params: Params, aggregate: Aggregate, server_state: NoState) -> tuple[Params, NoState]:
        """Return w - lr * mean_k(g_k; n_k) (the aggregated delta is -g) and the unchanged state."""
        return apply_delta(params, mean_delta(aggregate), self.lr), server_state
