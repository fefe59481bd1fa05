"""The Master Aggregator and its Aggregators (Bonawitz et al. 2019, section 4.2).

Each round the Master Aggregator spawns Aggregators; every accepted report goes to one of them.
For algorithms whose server half needs only the n_k-weighted mean of the deltas (FedAvg, FedSGD,
FedOpt), an Aggregator keeps just a running weighted sum: its memory does not grow with the number
of reports. Other algorithms (per-client normalisation, control variates, robust aggregation) get
the reports themselves, kept by the Aggregator that received them.

An Aggregator that fails loses only its own share: the Master Aggregator finalises the round from
the ones still alive, and the Coordinator counts only their reports towards the goal.

Where the Aggregators run is a backend: ``LocalBackend`` (the default) keeps them as plain objects
in the server process; ``hamrah.server.ray_backend.RayBackend`` runs the same ``Aggregator`` class
as Ray actors. The Master Aggregator talks to either through the ``Share`` handles they spawn.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import torch

from hamrah.algorithms.base import ClientResult
from hamrah.core.params import Params


@dataclass(frozen=True)
class Partial:
    """What one Aggregator hands the Master Aggregator when the round closes."""

    buffered: bool
    count: int
    weight: float
    loss_sum: float
    total: Params  # sum_k n_k delta_k in float64 (streaming shares)
    dtypes: dict
    results: list[ClientResult]  # the reports themselves (buffered shares)


@dataclass
class Aggregator:
    """One Aggregator's share of a round: a running weighted sum, or the buffered reports."""

    index: int
    buffered: bool
    alive: bool = True
    count: int = 0
    weight: float = 0.0
    loss_sum: float = 0.0
    total: Params = field(default_factory=dict)  # sum_k n_k delta_k in float64
    dtypes: dict = field(default_factory=dict)
    results: list[ClientResult] = field(default_factory=list)

    def add(self, result: ClientResult) -> None:
        """Fold one client's result into this share."""
        n = float(result.num_examples)
        if self.buffered:
            self.results.append(result)
        elif not self.total:
            self.dtypes = {k: v.dtype for k, v in result.delta.items()}
            self.total = {k: v.to(torch.float64) * n for k, v in result.delta.items()}
        else:
            for k, v in result.delta.items():
                self.total[k].add_(v.to(torch.float64), alpha=n)
        self.count += 1
        self.weight += n
        self.loss_sum += n * float(result.metrics.get("train_loss", 0.0))

    def partial(self) -> Partial:
        """Return this share's sums (or buffered reports) for the Master Aggregator."""
        return Partial(self.buffered, self.count, self.weight, self.loss_sum, self.total, self.dtypes, self.results)

    def crash(self) -> None:
        """Fail: everything this Aggregator held is lost."""
        self.alive, self.total, self.results = False, {}, []


class Share(Protocol):
    """The Master Aggregator's handle on one Aggregator, wherever it runs."""

    index: int
    alive: bool
    count: int  # reports routed to it (tracked by the handle, so reading it never blocks)

    def add(self, result: ClientResult) -> None: ...

    def crash(self) -> None: ...


class Backend(Protocol):
    """Where a round's Aggregators run: spawns them and gathers their partial sums."""

    def spawn(self, index: int, buffered: bool) -> Share: ...

    def gather(self, shares: list[Share]) -> list[Partial | None]:
        """Return each share's ``Partial``, or None for one found dead (its share is lost)."""
        ...

    def close(self) -> None: ...


class LocalBackend:
    """Aggregators as plain objects in the server process (the asyncio backend)."""

    def spawn(self, index: int, buffered: bool) -> Aggregator:
        return Aggregator(index, buffered)

    def gather(self, shares: list[Aggregator]) -> list[Partial | None]:
        return [a.partial() for a in shares]

    def close(self) -> None:
        pass


class MasterAggregator:
    """Spawns a round's Aggregators on ``backend``, routes reports to live ones, and combines their shares."""

    def __init__(self, aggregators: int, backend: Backend | None = None):
        self.size = aggregators
        self.backend = backend if backend is not None else LocalBackend()
        self.shares: list[Share] = []
        self.lost = 0

    def start_round(self, buffered: bool) -> None:
        self.shares = [self.backend.spawn(i, buffered) for i in range(self.size)]
        self._next = 0
        self.lost = 0

    def assign(self) -> int:
        """Return the Aggregator a newly selected device reports to (round robin over live ones)."""
        live = [a.index for a in self.shares if a.alive]
        if not live:
            return 0
        idx = live[self._next % len(live)]
        self._next += 1
        return idx

    def route(self, index: int) -> Share | None:
        """Return the live Aggregator for ``index``, or another live one if it failed; None if none is left."""
        if self.shares[index].alive:
            return self.shares[index]
        return next((a for a in self.shares if a.alive), None)

    def crash(self, index: int) -> int:
        """Fail Aggregator ``index``; return how many reports were lost with it."""
        lost = self.shares[index].count if self.shares[index].alive else 0
        self.shares[index].crash()
        self.lost += lost
        return lost

    def reports(self) -> int:
        return sum(a.count for a in self.shares if a.alive)

    def finalize(self) -> tuple[list[ClientResult], float]:
        """Return the results the server half folds in, and the mean training loss.

        Streaming shares are merged into one result whose delta is the weighted mean and whose
        weight is the total: for a weighted-mean server half this equals folding in every report.
        A share the backend finds dead now is lost like a crashed one.
        """
        candidates = [a for a in self.shares if a.alive and a.count]
        live = []
        for share, part in zip(candidates, self.backend.gather(candidates)):
            if part is None:
                self.lost += share.count
                share.alive = False
            else:
                live.append(part)
        weight = sum(p.weight for p in live)
        loss = sum(p.loss_sum for p in live) / weight if weight else float("nan")
        if not live:
            return [], loss
        if live[0].buffered:
            return [r for p in live for r in p.results], loss
        merged = {k: (sum(p.total[k] for p in live) / weight).to(dtype) for k, dtype in live[0].dtypes.items()}
        return [ClientResult(-1, merged, int(weight), {"train_loss": loss})], loss

    def close(self) -> None:
        """Release the backend (Ray: kill the Aggregator actors)."""
        self.backend.close()


def master_aggregator(aggregators: int, backend: str = "asyncio") -> MasterAggregator:
    """Return a Master Aggregator whose Aggregators run on ``backend`` ("asyncio" or "ray").

    Raises:
        ConfigError: ``backend`` is "ray" and the ray extra is not installed.
    """
    if backend == "ray":
        from hamrah.server.ray_backend import RayBackend  # imports ray: only for this backend

        return MasterAggregator(aggregators, RayBackend())
    return MasterAggregator(aggregators)
