"""The fast in-process driver: sample a cohort, train it (batched when the model allows), aggregate,
evaluate every ``eval_every`` rounds. Deterministic under one seed.

Only the cohort's data and models are materialised in a round, so memory grows with the cohort size,
not with the population.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import nn

from hamrah.algorithms.base import Algorithm, ClientResult
from hamrah.algorithms.local import evaluate
from hamrah.core.errors import ConfigError
from hamrah.core.params import Params, clone, sub
from hamrah.core.seeds import sampling_rng
from hamrah.data.federated import FederatedDataset
from hamrah.simulation.batched import supports_batching
from hamrah.simulation.parallel import ProcessPool, train_clients


@dataclass(frozen=True)
class SimulationConfig:
    """How to drive a simulated run.

    Attributes:
        rounds: number of training rounds.
        eval_every: evaluate the global model on the test set every this many rounds (and at the end).
        seed: the root seed; cohorts and local shuffles are derived from it.
        batched: train the cohort in one batched pass (None: for models with a fused MLP path, which
            measured fastest on CPU; a convolutional model trains faster one client per core).
        workers: processes that train clients side by side (None: one per CPU core for models
            trained one client at a time, else 1).
        target_accuracy: stop once reached, if ``stop_at_target``.
        stop_at_target: end the run at the first evaluation reaching ``target_accuracy``.
    """

    rounds: int
    eval_every: int = 1
    seed: int = 0
    batched: bool | None = None
    workers: int | None = None
    target_accuracy: float | None = None
    stop_at_target: bool = False

    def __post_init__(self) -> None:
        if self.rounds < 1:
            raise ConfigError(f"run.rounds = {self.rounds}: expected an integer >= 1")
        if self.workers is not None and self.workers < 1:
            raise ConfigError(f"run.workers = {self.workers}: expected an integer >= 1")
        if self.eval_every < 1:
            raise ConfigError(f"run.eval_every = {self.eval_every}: expected an integer >= 1")


@dataclass(frozen=True)
class RoundRecord:
    """One evaluated round."""

    round: int
    test_accuracy: float
    test_loss: float
    train_loss: float
    clients: int
    elapsed_s: float


@dataclass
class SimulationResult:
    params: Params
    history: list[RoundRecord] = field(default_factory=list)


class Simulator:
    """Drive ``algorithm`` over ``data``'s clients with ``model``.

    Example:
        >>> sim = Simulator(model, fed, FedAvg(0.1, LocalSGD(1, 10, 0.1)), SimulationConfig(rounds=5))  # doctest: +SKIP
        >>> result = sim.run()  # doctest: +SKIP
    """

    def __init__(self, model: nn.Module, data: FederatedDataset, algorithm: Algorithm, config: SimulationConfig):
        self.model, self.data, self.algorithm, self.config = model, data, algorithm, config
        if config.batched and not supports_batching(model):
            raise ConfigError(f"run.batched = true: model {type(model).__name__} has no batched form")
        auto_batched = hasattr(model, "mlp_layers")
        self.batched = auto_batched if config.batched is None else config.batched
        self.params: Params = clone(dict(model.named_parameters()))
        self.cohort = algorithm.cohort_size(data.num_clients)
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        auto_workers = 1 if self.batched else min(cores, self.cohort)
        self.workers = auto_workers if config.workers is None else min(config.workers, self.cohort)
        self._pool: ProcessPool | None = None

    def sample(self, round_idx: int) -> np.ndarray:
        """Return the sorted client ids of round ``round_idx``'s cohort."""
        rng = sampling_rng(self.config.seed, round_idx)
        return np.sort(rng.choice(self.data.num_clients, size=self.cohort, replace=False))

    def train_round(self, round_idx: int) -> list[ClientResult]:
        """Train the round's cohort from the current global model; return each client's result."""
        ids = [int(c) for c in self.sample(round_idx)]
        sizes = [len(self.data.client_indices[c]) for c in ids]
        plan, seed = self.algorithm.local_plan(), self.config.seed
        if self.workers > 1:
            if self._pool is None:
                self._pool = ProcessPool(self.model, self.data, self.workers)
            by_id = self._pool.train(self.params, ids, sizes, plan, seed, round_idx, self.batched)
            locals_ = [by_id[c] for c in ids]
        else:
            locals_ = train_clients(self.model, self.data, self.params, ids, plan, seed, round_idx, self.batched)
        return [
            ClientResult(c, sub(loc.params, self.params), n, {"train_loss": loc.train_loss})
            for c, n, loc in zip(ids, sizes, locals_)
        ]

    def close(self) -> None:
        """Stop the worker processes, if any."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def evaluate(self) -> tuple[float, float]:
        """Return (test loss, test accuracy) of the current global model."""
        return evaluate(self.model, self.params, self.data.dataset.test, self.data.dataset.ignore_index)

    def run(self, on_round: Callable[[RoundRecord], None] | None = None) -> SimulationResult:
        """Run all rounds; call ``on_round`` after each evaluation."""
        result = SimulationResult(self.params)
        start = time.perf_counter()
        try:
            self._run_rounds(result, start, on_round)
        finally:
            self.close()
        result.params = self.params
        return result

    def _run_rounds(self, result: SimulationResult, start: float, on_round) -> None:
        cfg = self.config
        for r in range(1, cfg.rounds + 1):
            results = self.train_round(r)
            self.params = self.algorithm.server_update(self.params, results)
            if r % cfg.eval_every and r != cfg.rounds:
                continue
            loss, acc = self.evaluate()
            ok = [x for x in results if x.error is None]
            train_loss = float(np.average([x.metrics["train_loss"] for x in ok], weights=[x.num_examples for x in ok]))
            record = RoundRecord(r, acc, loss, train_loss, len(ok), time.perf_counter() - start)
            result.history.append(record)
            if on_round is not None:
                on_round(record)
            if cfg.stop_at_target and cfg.target_accuracy is not None and acc >= cfg.target_accuracy:
                break


def seeded(factory: Callable[[], nn.Module], seed: int) -> nn.Module:
    """Build a model with torch's generator seeded from ``seed``, leaving global state untouched."""
    from hamrah.core.seeds import init_seed

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(init_seed(seed))
        return factory()
