"""From client results to the aggregate an algorithm applies: the in-memory path every driver shares.

A driver that holds the clients' :class:`~hamrah.algorithms.base.ClientResult` values (the simulator,
tests, benchmarks) turns each into the algorithm's packed statistics with :func:`contributions` (the
client-side step a device runs before it reports) and folds them with
:func:`~hamrah.core.aggregate.aggregate_contributions`, or with the update pipeline.

Example:
    >>> import torch
    >>> from hamrah.algorithms import ClientResult, FedAvg, LocalSGD
    >>> algo = FedAvg(0.1, LocalSGD(1, 10, 0.1))
    >>> rs = [ClientResult(0, {"w": torch.tensor([1.0])}, 1), ClientResult(1, {"w": torch.tensor([3.0])}, 3)]
    >>> algo.apply({"w": torch.zeros(1)}, aggregate_results(algo, rs), algo.init_server_state({}))[0]["w"]
    tensor([2.5000])
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from hamrah.algorithms.base import Algorithm, ClientResult
from hamrah.core.aggregate import Aggregate, CombineRule, Contribution, aggregate_contributions, pack
from hamrah.core.metrics import Weighted
from hamrah.core.params import Params

__all__ = ["aggregate_results", "apply_results", "contributions", "reported"]


def reported(results: Sequence[ClientResult]) -> list[ClientResult]:
    """Return the results without error and with data (what aggregation folds in)."""
    return [r for r in results if r.error is None and r.num_examples > 0]


def contributions(
    algorithm: Algorithm, results: Sequence[ClientResult], weight_of: Callable[[int], float] = float
) -> list[Contribution]:
    """Return each reported client's packed statistics, weight ``weight_of(n_k)`` and train loss.

    Args:
        algorithm: declares the statistics and computes them (:meth:`Algorithm.client_statistics`).
        results: the round's client results (failed or empty ones are skipped).
        weight_of: n_k -> the aggregation weight w_k (n_k by default; 1 under DP's equal weights).
    """
    out = []
    for r in reported(results):
        w = float(weight_of(r.num_examples))
        stats = pack(algorithm.client_statistics(r), algorithm.statistics, w)
        loss = Weighted.of(r.metrics.get("train_loss", 0.0), w)
        out.append(Contribution(r.client_id, stats, w, {"train_loss": loss}))
    return out


def aggregate_results(
    algorithm: Algorithm,
    results: Sequence[ClientResult],
    rule: CombineRule | None = None,
    weight_of: Callable[[int], float] = float,
) -> Aggregate:
    """Return the aggregate of the reported results (weighted sums; ``rule`` for the robust statistics).

    Raises:
        NotEnoughClients: no client reported.
    """
    return aggregate_contributions(contributions(algorithm, results, weight_of), algorithm.statistics, rule)


def apply_results(
    algorithm: Algorithm,
    params: Params,
    results: Sequence[ClientResult],
    server_state: object,
    rule: CombineRule | None = None,
) -> tuple[Params, object]:
    """Return ``algorithm.apply(params, aggregate_results(algorithm, results, rule), server_state)``: one
    in-memory server step from client results (tests, studies; drivers aggregate on their own paths).

    Raises:
        NotEnoughClients: no client reported.
    """
    return algorithm.apply(params, aggregate_results(algorithm, results, rule), server_state)
