"""Gradient transforms for the one local trainer (:func:`hamrah.algorithms.local.train_local`).

An algorithm changes local training only through these: FedProx adds a proximal gradient, SCAFFOLD a
control-variate correction, and the local solver's heavy-ball momentum is applied last. Each is
``(names, params, grads) -> grads``; a fresh instance is built per client run.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from hamrah.core.params import Params


@dataclass(frozen=True)
class Proximal:
    """Add mu (w - w_t), the gradient of FedProx's mu/2 ||w - w_t||^2 (Li et al. 2020, eq. 2)."""

    mu: float
    anchor: Params

    def __call__(self, names: list[str], params: list[torch.Tensor], grads: list[torch.Tensor]) -> list[torch.Tensor]:
        if self.mu == 0.0:
            return grads
        diff = torch._foreach_sub([p.detach() for p in params], [self.anchor[n] for n in names])
        return list(torch._foreach_add(list(grads), diff, alpha=self.mu))


@dataclass(frozen=True)
class Correction:
    """Add a fixed vector to every gradient: SCAFFOLD's c - c_i (Karimireddy et al. 2020, Alg. 1 line 10)."""

    offset: Params

    def __call__(self, names: list[str], params: list[torch.Tensor], grads: list[torch.Tensor]) -> list[torch.Tensor]:
        return list(torch._foreach_add(list(grads), [self.offset[n] for n in names]))


@dataclass
class Momentum:
    """Heavy-ball momentum u = rho u + g, returned as the step direction (torch.optim.SGD's form)."""

    rho: float
    buffers: list[torch.Tensor] | None = field(default=None)

    def __call__(self, names: list[str], params: list[torch.Tensor], grads: list[torch.Tensor]) -> list[torch.Tensor]:
        if self.buffers is None:
            self.buffers = [g.detach().clone() for g in grads]
        else:
            torch._foreach_mul_(self.buffers, self.rho)
            torch._foreach_add_(self.buffers, list(grads))
        return self.buffers
