"""Systems heterogeneity for the simulator: per-client local work, stragglers, drop-out.

Li et al. 2020 (*Federated Optimization in Heterogeneous Networks*, section 5.2) model stragglers as a
fraction of each round's clients that run fewer local epochs than E (uniform in 1..E); FedAvg drops
them, FedProx keeps their partial work. Draws come from a round-level generator, so the same seed
gives the same work on every path.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from hamrah.algorithms.base import LocalSGD
from hamrah.core.errors import ConfigError

DROPPED, STRAGGLER = "dropped", "straggler"
BUDGET_SPENT = "example-level privacy budget spent"  # DP-SGD: the client sits the round out


@dataclass(frozen=True)
class Heterogeneity:
    """How clients differ in a round.

    Attributes:
        epochs: (lo, hi): each client's local epochs drawn uniformly from lo..hi (inclusive), or None.
        steps: (lo, hi): each client's local steps drawn uniformly from lo..hi instead of epochs, or None.
        straggler_fraction: share of the cohort doing partial work (uniform 1..its epochs or steps).
        dropout: probability that a sampled client fails before reporting.
    """

    epochs: tuple[int, int] | None = None
    steps: tuple[int, int] | None = None
    straggler_fraction: float = 0.0
    dropout: float = 0.0

    def __post_init__(self) -> None:
        for key, rng_ in (("epochs", self.epochs), ("steps", self.steps)):
            if rng_ is not None and not (
                len(rng_) == 2 and all(isinstance(v, int) for v in rng_) and 1 <= rng_[0] <= rng_[1]
            ):
                raise ConfigError(f"heterogeneity.{key} = {rng_!r}: expected [lo, hi] integers with 1 <= lo <= hi")
        if self.epochs is not None and self.steps is not None:
            raise ConfigError("heterogeneity: set epochs or steps, not both")
        for key, v in (("straggler_fraction", self.straggler_fraction), ("dropout", self.dropout)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:
                raise ConfigError(f"heterogeneity.{key} = {v!r}: expected a fraction in [0, 1]")
        if self.dropout >= 1.0:
            raise ConfigError(f"heterogeneity.dropout = {self.dropout!r}: expected < 1 (every client would fail)")


@dataclass(frozen=True)
class ClientWork:
    """One client's work in a round: its plan, whether it is a straggler, whether it dropped out."""

    plan: LocalSGD
    straggler: bool = False
    dropped: bool = False


def draw_work(
    het: Heterogeneity | None, plan: LocalSGD, sizes: Sequence[int], rng: np.random.Generator
) -> list[ClientWork]:
    """Return each cohort client's work: local epochs/steps, straggling and drop-out."""
    if het is None:
        return [ClientWork(plan) for _ in sizes]
    m = len(sizes)
    num_stragglers = int(round(het.straggler_fraction * m))
    stragglers = set(rng.choice(m, size=num_stragglers, replace=False).tolist())
    dropped = rng.random(m) < het.dropout
    out = []
    for i, n in enumerate(sizes):
        p = plan
        if het.epochs is not None:
            p = dataclasses.replace(p, epochs=int(rng.integers(het.epochs[0], het.epochs[1] + 1)))
        elif het.steps is not None:
            p = dataclasses.replace(p, num_steps=int(rng.integers(het.steps[0], het.steps[1] + 1)))
        if i in stragglers:
            p = _partial(p, n, rng)
        out.append(ClientWork(p, i in stragglers, bool(dropped[i])))
    return out


def _partial(plan: LocalSGD, num_examples: int, rng: np.random.Generator) -> LocalSGD:
    """Return a straggler's plan: epochs uniform in 1..E, or steps uniform in 1..its steps."""
    if plan.num_steps is None and plan.epochs > 1:
        return dataclasses.replace(plan, epochs=int(rng.integers(1, plan.epochs + 1)))
    return dataclasses.replace(plan, num_steps=int(rng.integers(1, plan.steps(num_examples) + 1)))
