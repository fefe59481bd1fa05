"""The simulator's side of example-level DP-SGD (``privacy.mode = "dpsgd"``): who may train under each
client's budget, what a training charges, and when nobody can train any more. The ledger is
:class:`hamrah.privacy.examples.ExampleLedger`; dp_accounting loads only when a run uses DP-SGD."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from hamrah.algorithms.base import Algorithm, LocalSGD
from hamrah.core.errors import ConfigError

if TYPE_CHECKING:
    from hamrah.privacy.examples import ExampleLedger


def checked_ledger(algorithm: Algorithm, ledger: ExampleLedger | None) -> ExampleLedger | None:
    """Return the ledger of a DP-SGD run (None for another run).

    Raises:
        ConfigError: the algorithm trains with DP-SGD and no ledger (its delta) is given, or the reverse.
    """
    dpsgd = algorithm.local_plan().example_dp is not None
    if dpsgd and ledger is None:
        raise ConfigError(
            f"algorithm {algorithm.name} trains with DP-SGD: expected example_ledger=ExampleLedger(delta, "
            'target_epsilon) to account each client\'s examples (a config sets it from [privacy] mode = "dpsgd")'
        )
    if ledger is not None and not dpsgd:
        raise ConfigError(f"example_ledger given, but algorithm {algorithm.name} does not train with DP-SGD")
    return ledger


def weight_of(ledger: ExampleLedger | None, pipeline) -> Callable[[int], float]:
    """Return n_k -> the aggregation weight w_k of a round: 1 under DP-SGD (uniform weighting, as in
    DP-FedAvg: its example-level epsilon covers the noised update, not the count n_k, so a device's
    report says 1 example and weighs 1, ``hamrah.device.compute.weighs_one``), else the pipeline's
    (1 under its DP modes), else n_k."""
    if ledger is not None:
        return _one
    return pipeline.weight if pipeline is not None else float


def _one(num_examples: int) -> float:
    return 1.0


def events(plan: LocalSGD, num_examples: int) -> list:
    """DP-SGD's privacy events of one local training (:func:`hamrah.algorithms.dpsgd.privacy_events`)."""
    from hamrah.algorithms.dpsgd import privacy_events

    return privacy_events(plan, num_examples)


def over_budget(ledger: ExampleLedger, work: Iterable[tuple[int, int, LocalSGD]]) -> set[int]:
    """Return the clients of ``(client, n_k, plan)`` whose training would pass the ledger's target."""
    return {c for c, n, plan in work if not ledger.allows(c, events(plan, n))}


def charge(ledger: ExampleLedger, work: Iterable[tuple[int, int, LocalSGD]]) -> None:
    """Charge each ``(client, n_k, plan)`` that trained."""
    for c, n, plan in work:
        ledger.charge(c, events(plan, n))


def exhausted(ledger: ExampleLedger, plan: LocalSGD, sizes: Iterable[int]) -> str | None:
    """Return why no client (of ``sizes``, by id) can afford one more training of ``plan``, or None."""
    if ledger.target_epsilon is None or any(ledger.allows(c, events(plan, n)) for c, n in enumerate(sizes)):
        return None
    return (
        f"every client has spent its example-level privacy budget (privacy.target_epsilon = "
        f"{ledger.target_epsilon}): one more local training would pass it"
    )


__all__ = ["charge", "checked_ledger", "exhausted", "over_budget", "weight_of"]
