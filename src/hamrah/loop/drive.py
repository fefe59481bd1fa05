"""The in-process pump of :class:`~hamrah.loop.state.RoundLoop`: a runner runs each round to an
aggregate and records it; the loop applies, adopts and decides when to stop (after Flower's ``Grid``:
the round logic does not know how clients are reached)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from hamrah.core.aggregate import Aggregate
from hamrah.core.params import Params
from hamrah.core.records import RoundRecord
from hamrah.loop.state import AggregateRefused, Applied, End, RoundLoop


class Runner(Protocol):
    """How a driver reaches its clients: the round's training and its bookkeeping."""

    def run_round(self, round_idx: int) -> Aggregate | None:
        """Train round ``round_idx``'s cohort from the loop's model; return the aggregate of what they
        sent (None: nothing to apply, the model stays)."""
        ...

    def aggregate_refused(self, round_idx: int, error: AggregateRefused) -> None:
        """The round's aggregate was refused (not finite): the model stays."""
        ...

    def finish_round(self, round_idx: int, aggregate: Aggregate | None, scored: Params | None) -> RoundRecord | None:
        """Close round ``round_idx`` (charge a privacy budget, count bytes); ``aggregate`` is the one
        adopted (None: the model stayed). When ``scored`` is given, score that model on the test set and
        return the round's record (else None)."""
        ...


def drive(
    loop: RoundLoop,
    runner: Runner,
    on_round: Callable[[RoundRecord], None] | None = None,
    after_round: Callable[[int], None] | None = None,
) -> End | None:
    """Run ``loop``'s rounds through ``runner`` until the loop ends; return why it ended.

    ``on_round`` gets each scored round's record; ``after_round(r)`` runs after round r is adopted (a
    checkpoint hook: it never runs ahead of the round's record).
    """
    while (r := loop.due()) is not None:
        aggregate = runner.run_round(r)
        applied: Applied | None = None
        if aggregate is not None:
            try:
                applied = loop.apply(r, aggregate)
            except AggregateRefused as err:
                runner.aggregate_refused(r, err)
        scored = (applied.params if applied is not None else loop.params) if loop.plan.evaluates(r) else None
        record = runner.finish_round(r, aggregate if applied is not None else None, scored)
        loop.commit(r, applied, record.test_accuracy if record is not None else None)
        if record is not None and on_round is not None:
            on_round(record)
        if after_round is not None:
            after_round(r)
    return loop.ended


__all__ = ["Runner", "drive"]
