"""The Master Aggregator and its Aggregators (Bonawitz et al. 2019, section 4.2).

Each round the Master Aggregator spawns Aggregators; every accepted report (one client's packed
statistics, a :class:`~hamrah.core.aggregate.Contribution`) goes to one of them. Every algorithm's
server half takes one :class:`~hamrah.core.aggregate.Aggregate` of weighted sums, so an Aggregator
keeps just a running weighted sum (:class:`~hamrah.core.aggregate.Accumulator`): its memory does not
grow with the number of reports. Only a robust aggregator (which needs each client's delta) and
homomorphic encryption (whose ciphertexts are weighted and added at commit) keep the reports
themselves (``buffered``).

An Aggregator that fails loses only its own share: the Master Aggregator finalises the round from
the ones still alive, and the Coordinator counts only their reports towards the goal.

Where the Aggregators run is a backend: ``LocalBackend`` (the default) keeps them as plain objects
in the server process; ``hamrah.server.ray_backend.RayBackend`` runs the same ``AggregatorShare``
class as Ray actors. The Master Aggregator talks to either through the ``Share`` handles they spawn.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from hamrah.core.aggregate import Accumulator, Aggregate, CombineRule, Contribution, Statistic, aggregate_contributions


@dataclass(frozen=True)
class Partial:
    """What one Aggregator hands the Master Aggregator when the round closes."""

    buffered: bool
    count: int
    sums: Accumulator  # the running weighted sum (streaming shares)
    contributions: list[Contribution]  # the reports themselves (buffered shares)


@dataclass
class AggregatorShare:
    """One Aggregator's share of a round (the paper's "Aggregator"): a running weighted sum, or the
    buffered reports."""

    index: int
    buffered: bool
    alive: bool = True
    count: int = 0
    sums: Accumulator = field(default_factory=Accumulator)
    contributions: list[Contribution] = field(default_factory=list)

    def add(self, contribution: Contribution) -> None:
        """Fold one client's packed statistics into this share."""
        if self.buffered:
            self.contributions.append(contribution)
        else:
            self.sums.add(contribution)
        self.count += 1

    def partial(self) -> Partial:
        """Return this share's sums (or buffered reports) for the Master Aggregator."""
        return Partial(self.buffered, self.count, self.sums, self.contributions)

    def crash(self) -> None:
        """Fail: everything this Aggregator held is lost."""
        self.alive, self.sums, self.contributions = False, Accumulator(), []

    def failed(self) -> bool:
        """Return whether this Aggregator died on its own (never, in the server process)."""
        return False


class Share(Protocol):
    """The Master Aggregator's handle on one Aggregator, wherever it runs."""

    index: int
    alive: bool
    count: int  # reports routed to it (tracked by the handle, so reading it never blocks)

    def add(self, contribution: Contribution) -> None: ...

    def crash(self) -> None: ...

    def failed(self) -> bool:
        """Return whether it died on its own (checked without waiting; the Master then crashes it)."""
        ...


class Backend(Protocol):
    """Where a round's Aggregators run: spawns them and gathers their partial sums."""

    def spawn(self, index: int, buffered: bool) -> Share: ...

    def gather(self, shares: list[Share]) -> list[Partial | None]:
        """Return each share's ``Partial``, or None for one found dead (its share is lost)."""
        ...

    def close(self) -> None: ...


class LocalBackend:
    """Aggregators as plain objects in the server process (the asyncio backend)."""

    def spawn(self, index: int, buffered: bool) -> AggregatorShare:
        return AggregatorShare(index, buffered)

    def gather(self, shares: list[AggregatorShare]) -> list[Partial | None]:
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

    def _sweep(self) -> None:
        """Crash the Aggregators found dead (a Ray actor whose process died): their reports are lost."""
        for a in self.shares:
            if a.alive and a.failed():
                self.crash(a.index)

    def assign(self) -> int:
        """Return the Aggregator a newly selected device reports to (round robin over live ones)."""
        self._sweep()
        live = [a.index for a in self.shares if a.alive]
        if not live:
            return 0
        idx = live[self._next % len(live)]
        self._next += 1
        return idx

    def route(self, index: int) -> Share | None:
        """Return the live Aggregator for ``index``, or another live one if it failed; None if none is left."""
        self._sweep()
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
        self._sweep()
        return sum(a.count for a in self.shares if a.alive)

    def finalize(
        self, statistics: Sequence[Statistic], rule: CombineRule | None = None
    ) -> tuple[Aggregate | None, list[Contribution]]:
        """Return the round's aggregate of the live shares (None when no report is left) and, for
        buffered shares, the reports themselves (what homomorphic encryption adds at commit).

        Streaming shares' weighted sums are merged (equal to folding in every report); buffered shares'
        reports are aggregated here, with ``rule`` for the statistics declared robust. A buffered round
        whose reports are ciphertexts returns no aggregate, only the reports. A share the backend finds
        dead now is lost like a crashed one.
        """
        candidates = [a for a in self.shares if a.alive and a.count]
        live = []
        for share, part in zip(candidates, self.backend.gather(candidates)):
            if part is None:
                self.lost += share.count
                share.alive = False
            else:
                live.append(part)
        if not live:
            return None, []
        if live[0].buffered:
            reports = [c for p in live for c in p.contributions]
            if not reports or not all(v.is_floating_point() for v in reports[0].stats.values()):
                return None, reports
            return aggregate_contributions(reports, statistics, rule), reports
        total = Accumulator()
        for p in live:
            total.merge(p.sums)
        return (total.result() if total.count else None), []

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
