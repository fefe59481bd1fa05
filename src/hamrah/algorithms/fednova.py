"""FedNova (Wang et al. 2020, *Tackling the Objective Inconsistency Problem in Heterogeneous Federated
Optimization*, NeurIPS; section 4, eq. 6-7 and appendix on momentum and proximal local solvers)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from hamrah.algorithms.base import DELTA, ClientResult, NoState, apply_delta
from hamrah.algorithms.fedprox import FedProx
from hamrah.core.aggregate import Aggregate, Statistic
from hamrah.core.errors import ConfigError
from hamrah.core.params import Params

A_NORM = Statistic("a_norm", shape="scalar", bounded=False)
"""||a_i||_1, n_k-weighted: its weighted mean is tau_eff. A count (>= 1, growing with the local steps,
which reveal n_k), so neither DP's clip nor a secure sum's coordinate range bounds it."""


def a_norm(steps: int, lr: float, momentum: float = 0.0, mu: float = 0.0) -> float:
    """Return ||a_i||_1 for a client that ran ``steps`` local steps.

    The local update is w_tau - w_0 = -lr sum_j a_ij g_j (gradients held fixed). The paper's closed forms:
    plain SGD tau; momentum rho [tau - rho (1 - rho^tau) / (1 - rho)] / (1 - rho); proximal
    [1 - (1 - lr mu)^tau] / (lr mu). Rather than three formulas (and none for both at once) this runs
    the scalar recursion u = rho u + 1 + mu x, x <- x - lr u with every g_j = 1, which gives
    sum_j a_ij = -x_tau / lr exactly for each of them (tests check it against the closed forms).
    """
    x = u = 0.0
    for t in range(steps):
        u = (momentum * u if t else 0.0) + 1.0 + mu * x
        x -= lr * u
    return -x / lr


@dataclass(frozen=True)
class FedNova(FedProx):
    """FedNova: normalised averaging. Client i reports delta_i after tau_i steps; with p_i = n_i / n
    the server steps x <- x + tau_eff * sum_i p_i delta_i / ||a_i||_1, tau_eff = sum_i p_i ||a_i||_1.

    Each client sends two n_k-weighted statistics (computed on the client from its own step count):
    ``delta`` = delta_i / ||a_i||_1 (a robust aggregator may replace its mean) and ``a_norm`` = ||a_i||_1.

    The client half is FedProx's: SGD with the plan's momentum and an optional proximal term ``mu``
    (0 by default), partial work accepted (normalisation is what makes it safe). ||a_i||_1 is computed
    from each client's reported ``local_steps``. Equal local steps give FedAvg.

    Example:
        >>> from hamrah.algorithms import LocalSGD
        >>> FedNova(0.1, LocalSGD(2, 50, 0.02)).name
        'fednova'
    """

    mu: float = 0.0
    name: str = "fednova"
    statistics: ClassVar[tuple[Statistic, ...]] = (DELTA, A_NORM)

    def __post_init__(self) -> None:
        super().__post_init__()
        limit = (1.0 - math.sqrt(self.local.momentum)) ** 2 / self.local.lr
        if self.mu > limit:
            raise ConfigError(
                f"algorithm.mu = {self.mu!r}: with lr = {self.local.lr} and momentum = {self.local.momentum} the "
                "proximal term makes some of FedNova's step weights a_ij negative (the local iterate overshoots "
                "w_t), so their sum is not ||a_i||_1 and can reach 0 or below; expected lr * mu <= "
                f"(1 - sqrt(momentum))^2, mu <= {limit:g}"
            )
        if self.local.example_dp is not None:
            raise ConfigError(
                'algorithm.name = "fednova" with privacy.mode = "dpsgd": each client sends ||a_i||_1, a function '
                "of its number of local steps and so of its example count, un-noised and outside the "
                "example-level epsilon; expected another algorithm (fedavg, fedprox, ...) under DP-SGD"
            )
        if self.local.optimizer != "sgd":
            raise ConfigError(
                f'algorithm.local_optimizer = "{self.local.optimizer}": FedNova normalises each update by '
                "||a_i||_1, computed from the number of SGD (or momentum) steps; an adaptive optimizer's "
                'steps have no such weights; expected local_optimizer = "sgd" with fednova'
            )

    def client_statistics(self, result: ClientResult) -> Params:
        """Return ``delta/`` = delta_i / ||a_i||_1 and ``a_norm`` = ||a_i||_1 (from the result's ``local_steps``);
        a client that ran no step (no examples) sends zeros for both rather than 0 / 0."""
        a = a_norm(int(result.metrics["local_steps"]), self.local.lr, self.local.momentum, self.mu)
        if not a > 0:  # no step (a client without examples): its delta is 0 and 0 / 0 would be NaN
            a = 0.0
            out = {f"{DELTA.name}/{k}": torch.zeros_like(v) for k, v in result.delta.items()}
        else:
            out = {f"{DELTA.name}/{k}": v / a for k, v in result.delta.items()}
        out[A_NORM.name] = torch.tensor([a], dtype=torch.float32)
        return out

    def buffer_problem(self) -> str | None:
        return "it rescales each client's delta by tau_eff / a_i"

    def apply(self, params: Params, aggregate: Aggregate, server_state: NoState) -> tuple[Params, NoState]:
        """Return x + tau_eff * mean(delta_i / ||a_i||_1; n_i), tau_eff = mean(||a_i||_1; n_i), and the state."""
        tau_eff = float(aggregate.mean(A_NORM)[A_NORM.name].reshape(-1)[0])
        return apply_delta(params, aggregate.mean(DELTA), tau_eff), server_state
