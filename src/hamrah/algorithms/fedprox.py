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
from hamrah.core.errors import ConfigError
from hamrah.core.numbers import check_number
from hamrah.core.params import Params


def check_pull(key: str, pull: float, plan: LocalSGD) -> None:
    """Refuse a proximal pull that makes local SGD diverge on its own: on the term pull/2 ||w - w_t||^2,
    heavy-ball SGD (momentum rho, plain SGD at rho = 0) contracts only when lr * pull < 2 (1 + rho);
    beyond it w - w_t grows geometrically to inf, and FedNova's ||a_i||_1 goes to 0 or below. Adam and
    AdamW normalise the step, so any pull is stable there.

    Raises:
        ConfigError: naming ``key`` and the largest pull the plan's lr and momentum allow.
    """
    if plan.optimizer != "sgd":
        return
    limit = 2.0 * (1.0 + plan.momentum) / plan.lr
    if pull >= limit:
        raise ConfigError(
            f"{key} = {pull!r}: with lr = {plan.lr} and momentum = {plan.momentum} the proximal term alone "
            f"makes local SGD diverge (lr * {key.rsplit('.', 1)[-1]} >= 2 (1 + momentum)); expected a value "
            f"below {limit:g}"
        )


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
        check_pull("algorithm.mu", self.mu, self.local)

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
