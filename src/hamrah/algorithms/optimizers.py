"""Local optimizers beyond SGD, as the last gradient transform of the one local trainer.

:func:`hamrah.algorithms.local.train_local` steps ``w <- w - lr * direction``; an optimizer is the
transform that turns the (already transformed: FedProx's proximal term...) minibatch gradient into
that direction, so the loop stays one loop:

- ``sgd``: the gradient itself, or heavy-ball momentum (:class:`hamrah.algorithms.transforms.Momentum`);
- ``adam``: Kingma & Ba 2015, Algorithm 1, with ``weight_decay`` as an L2 term added to the gradient
  (``torch.optim.Adam``'s form);
- ``adamw``: Adam with decoupled weight decay, ``w <- w - lr * (adam + weight_decay * w)``
  (Loshchilov & Hutter 2019; ``torch.optim.AdamW``'s form).

The moments live for one client's local run (a fresh instance per run), as in FedAvg with a local
Adam solver: no optimizer state travels between rounds.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from hamrah.algorithms.base import OPTIMIZERS, GradientTransform, LocalSGD
from hamrah.algorithms.transforms import Momentum


@dataclass
class Adam:
    """The Adam (or, with ``decoupled``, AdamW) step direction; see the module docstring."""

    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    decoupled: bool = False
    step: int = 0
    m: list[torch.Tensor] = field(default_factory=list)
    v: list[torch.Tensor] = field(default_factory=list)

    def __call__(self, names: list[str], params: list[torch.Tensor], grads: list[torch.Tensor]) -> list[torch.Tensor]:
        b1, b2 = self.betas
        grads = list(grads)
        if self.weight_decay and not self.decoupled:
            grads = list(torch._foreach_add(grads, [p.detach() for p in params], alpha=self.weight_decay))
        if not self.m:
            self.m = [torch.zeros_like(g) for g in grads]
            self.v = [torch.zeros_like(g) for g in grads]
        self.step += 1
        torch._foreach_lerp_(self.m, grads, 1 - b1)
        torch._foreach_mul_(self.v, b2)
        torch._foreach_addcmul_(self.v, grads, grads, value=1 - b2)
        c1, c2 = 1 - b1**self.step, (1 - b2**self.step) ** 0.5
        denom = torch._foreach_div(torch._foreach_sqrt(self.v), c2)
        torch._foreach_add_(denom, self.eps)
        direction = torch._foreach_div(torch._foreach_div(self.m, c1), denom)
        if self.weight_decay and self.decoupled:
            torch._foreach_add_(direction, [p.detach() for p in params], alpha=self.weight_decay)
        return list(direction)


def local_optimizer(plan: LocalSGD) -> list[GradientTransform]:
    """Return the transform that makes a step direction of the plan's optimizer (none: plain SGD)."""
    if plan.optimizer in ("adam", "adamw"):
        return [Adam(plan.betas, weight_decay=plan.weight_decay, decoupled=plan.optimizer == "adamw")]
    return [Momentum(plan.momentum)] if plan.momentum > 0 else []


__all__ = ["OPTIMIZERS", "Adam", "local_optimizer"]
