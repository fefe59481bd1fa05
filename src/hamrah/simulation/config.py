"""What a simulated run is given and what it returns: :class:`SimulationConfig`, :class:`SimulationResult`,
and the :class:`Attack` hook a security lab plugs into :class:`hamrah.simulation.Simulator`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from hamrah.algorithms.base import ClientResult
from hamrah.core.errors import ConfigError
from hamrah.core.params import Params
from hamrah.core.records import RoundRecord
from hamrah.data.federated import ArrayData
from hamrah.loop import RunPlan
from hamrah.simulation.heterogeneity import Heterogeneity

BACKENDS = ("local", "ray")  # where clients train: worker processes here, or actors on a Ray cluster


class Attack(Protocol):
    """The attack hook a security lab plugs into :class:`Simulator` (all methods pure, seeded by ``rng``)."""

    def is_malicious(self, client_id: int) -> bool:
        """Return True when ``client_id`` is controlled by the attacker."""
        ...

    def poison_data(self, client_id: int, data: ArrayData, rng: np.random.Generator) -> ArrayData:
        """Return the data a malicious client trains on instead of its own."""
        ...

    def poison_updates(
        self, malicious: list[ClientResult], benign: list[ClientResult], rng: np.random.Generator
    ) -> list[ClientResult]:
        """Return the results that replace the malicious clients' results of the round."""
        ...


@dataclass(frozen=True)
class SimulationConfig:
    """How to drive a simulated run.

    Attributes:
        rounds: number of training rounds.
        eval_every: evaluate the global model on the test set every this many rounds (and at the end).
        seed: the root seed; cohorts and local shuffles are derived from it.
        batched: train the cohort in one batched pass (None: for models with a fused MLP path, which
            measured fastest on CPU; a convolutional model trains faster one client per core).
        workers: processes that train clients side by side (None: one per CPU core for a convolutional
            model trained one client at a time, else 1; ``hamrah.simulation.placement``); with
            ``backend = "ray"``, Ray actors (None: one per CPU of the cluster, up to the cohort).
        backend: ``"local"`` (worker processes on this machine) or ``"ray"`` (actors on a Ray cluster,
            ``hamrah.simulation.ray_pool``).
        target_accuracy: stop once reached, if ``stop_at_target``.
        stop_at_target: end the run at the first evaluation reaching ``target_accuracy``.
        heterogeneity: per-client local work, stragglers and drop-out (None: every client alike).
    """

    rounds: int
    eval_every: int = 1
    seed: int = 0
    batched: bool | None = None
    workers: int | None = None
    backend: str = "local"
    target_accuracy: float | None = None
    stop_at_target: bool = False
    heterogeneity: Heterogeneity | None = None

    def __post_init__(self) -> None:
        _ = self.plan  # RunPlan checks rounds and eval_every
        if self.workers is not None and self.workers < 1:
            raise ConfigError(f"run.workers = {self.workers}: expected an integer >= 1")
        if self.backend not in BACKENDS:
            raise ConfigError(f"run.backend = {self.backend!r}: expected one of {', '.join(BACKENDS)}")

    @property
    def plan(self) -> RunPlan:
        """The settings of the shared round loop (:class:`hamrah.loop.RunPlan`)."""
        return RunPlan(self.rounds, self.seed, self.eval_every, self.target_accuracy, self.stop_at_target)


@dataclass
class SimulationResult:
    params: Params
    history: list[RoundRecord] = field(default_factory=list)
    stopped: str | None = None  # why training ended early (the privacy budget), or None


__all__ = ["BACKENDS", "Attack", "SimulationConfig", "SimulationResult"]
