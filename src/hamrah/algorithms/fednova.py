"""FedNova (Wang et al. 2020, *Tackling the Objective Inconsistency Problem in Heterogeneous Federated
Optimization*, NeurIPS; section 4, eq. 6-7 and appendix on momentum and proximal local solvers)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from hamrah.algorithms.base import Aggregator, ClientResult, NoState, aggregate, apply_delta, reported
from hamrah.algorithms.fedprox import FedProx
from hamrah.core.params import Params


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

    def server_update(self, global_params: Params, results: Sequence[ClientResult], server_state: NoState,
                      aggregator: Aggregator | None = None) -> tuple[Params, NoState]:
        """Return x + tau_eff * agg(delta_i / ||a_i||_1; n_i) and the unchanged state."""
        ok = reported(results)
        norms = [a_norm(int(r.metrics["local_steps"]), self.local.lr, self.local.momentum, self.mu) for r in ok]
        n = float(sum(r.num_examples for r in ok))
        tau_eff = sum(r.num_examples / n * a for r, a in zip(ok, norms))
        normed = [{k: v / a for k, v in r.delta.items()} for r, a in zip(ok, norms)]
        return apply_delta(global_params, aggregate(normed, [r.num_examples for r in ok], aggregator), tau_eff), server_state
