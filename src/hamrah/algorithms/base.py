"""The contract every federated algorithm follows: a client half and a server half, no I/O.

A driver (the simulator now; the server and the device runtime later) asks the algorithm how many
clients to sample (:meth:`Algorithm.cohort_size`), what local training each runs
(:meth:`Algorithm.local_plan`), and folds the reported :class:`ClientResult` values into the next
global model (:meth:`Algorithm.server_update`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Protocol, Sequence

import torch

from hamrah.core.errors import ConfigError, NotEnoughClients
from hamrah.core.params import Params


@dataclass(frozen=True)
class LocalSGD:
    """Local training a client runs: ``epochs`` passes of minibatch SGD.

    Attributes:
        epochs: E, local passes over the client's data.
        batch_size: B, or None for the whole local data set as one batch (B = inf).
        lr: local learning rate.
    """

    epochs: int
    batch_size: int | None
    lr: float

    def __post_init__(self) -> None:
        if isinstance(self.epochs, bool) or not isinstance(self.epochs, int) or self.epochs < 1:
            raise ConfigError(f"algorithm.local_epochs = {self.epochs!r}: expected an integer >= 1")
        if self.batch_size is not None and (
            isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1
        ):
            raise ConfigError(f"algorithm.batch_size = {self.batch_size!r}: expected an integer >= 1 or \"inf\"")
        if isinstance(self.lr, bool) or not (isinstance(self.lr, (int, float)) and self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"algorithm.lr = {self.lr!r}: expected a positive finite number")

    def steps(self, num_examples: int) -> int:
        """Return the number of local SGD steps on ``num_examples`` examples (u_k in the paper)."""
        b = num_examples if self.batch_size is None else self.batch_size
        return self.epochs * math.ceil(num_examples / max(b, 1))


@dataclass(frozen=True)
class ClientResult:
    """What one client reports after a round: its model change and how much data produced it.

    ``error`` is set (and ``delta`` empty) when the client failed: failures are values.
    """

    client_id: int
    delta: Params
    num_examples: int
    metrics: dict = field(default_factory=dict)
    error: str | None = None


class Algorithm(Protocol):
    """A federated algorithm: ``cohort_size`` + ``local_plan`` (client half) + ``server_update``."""

    name: str

    def cohort_size(self, population: int) -> int: ...

    def local_plan(self) -> LocalSGD: ...

    def server_update(self, global_params: Params, results: Sequence[ClientResult]) -> Params: ...


def cohort_size(client_fraction: float, population: int) -> int:
    """Return m = max(C * K, 1), McMahan et al.'s number of clients per round."""
    if not 0.0 <= client_fraction <= 1.0:
        raise ConfigError(f"algorithm.client_fraction = {client_fraction!r}: expected 0 <= C <= 1")
    return max(int(client_fraction * population + 1e-9), 1)


def weighted_mean_delta(results: Sequence[ClientResult], round_idx: int | None = None) -> Params:
    """Return sum_k n_k delta_k / sum_k n_k over the clients that reported without error."""
    ok = [r for r in results if r.error is None and r.num_examples > 0]
    if not ok:
        raise NotEnoughClients(f"round {round_idx}: no client reported an update")
    total = float(sum(r.num_examples for r in ok))
    out = {k: torch.zeros_like(v) for k, v in ok[0].delta.items()}
    for r in ok:
        w = r.num_examples / total
        for k, v in r.delta.items():
            out[k].add_(v, alpha=w)
    return out
