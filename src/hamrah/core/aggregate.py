"""Aggregate, then apply: what every path between the clients and an algorithm's server half produces.

An algorithm declares the :class:`Statistic` values its clients send (FedAvg: the model delta; SCAFFOLD:
the delta and the control-variate change; FedNova: the normalised delta and ||a_i||_1). A client's
statistics travel as ONE namespaced ``Params`` (``"delta/fc1.weight"``, ``"control/fc1.weight"``,
``"a_norm"``), so the update pipeline, secure aggregation, HE, the server's streaming Aggregators and
Ray actors handle them like any update. Whatever path the round takes, it ends in one
:class:`Aggregate` (named sums, total weight, client count, metrics with their own reduction); the
algorithm then ``apply``s it (pfl-research's ``process_aggregated_statistics``).

The weighting convention, the same on every path: aggregation computes ``sum_k w_k x_k`` over the
clients' packed vectors ``x_k`` (w_k = n_k, or 1 under DP). A statistic weighted by examples is packed
as is; a plain sum (``weighting = "unit"``, SCAFFOLD's control change) is packed as ``s_k / w_k``
(:func:`pack`), so the same weighted sum yields ``sum_k s_k``. A robust aggregator may replace the
weighted mean only of statistics declared ``robust`` (the delta).

Example:
    >>> import torch
    >>> stats = (Statistic("delta", robust=True), Statistic("control", weighting="unit"))
    >>> xs = [pack({"delta/w": torch.tensor([1.0]), "control/w": torch.tensor([2.0])}, stats, 1.0),
    ...       pack({"delta/w": torch.tensor([4.0]), "control/w": torch.tensor([6.0])}, stats, 3.0)]
    >>> agg = aggregate_contributions([Contribution(0, xs[0], 1.0), Contribution(1, xs[1], 3.0)], stats)
    >>> agg.mean(stats[0])["w"].item(), agg.total(stats[1])["w"].item(), agg.count
    (3.25, 8.0, 2)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch

from hamrah.core.errors import ConfigError, NotEnoughClients
from hamrah.core.metrics import Metric, merge_metrics
from hamrah.core.params import Params

__all__ = [
    "Accumulator",
    "Aggregate",
    "CombineRule",
    "Contribution",
    "Statistic",
    "aggregate_contributions",
    "pack",
    "robust_mean",
    "statistics_template",
    "view",
    "weighted_mean",
    "weighted_sum",
]

SHAPES = ("params", "scalar")
WEIGHTINGS = ("examples", "unit")
CombineRule = Callable[[list[Params], list[float]], Params]
"""A robust rule: the clients' values of one statistic and their weights -> one combined value (a mean)."""


@dataclass(frozen=True)
class Statistic:
    """One named statistic a client sends.

    Attributes:
        name: the namespace (``"delta"`` -> keys ``"delta/<param>"``; a scalar's key is the name).
        shape: "params" (one tensor per model parameter) or "scalar" (one number, shape ``(1,)``).
        weighting: "examples" (aggregated as ``sum_k w_k s_k``) or "unit" (a plain ``sum_k s_k``).
        robust: a robust aggregator may replace this statistic's weighted mean.
        bounded: its values are bounded like a model update, so DP's clip and the coordinate range of a
            secure sum (SecAgg's ``clip``, HE's ``bound``) keep it meaningful. False for a count that
            grows with local work (FedNova's ||a_i||_1 >= 1): the pipeline refuses those stages for it.
    """

    name: str
    shape: str = "params"
    weighting: str = "examples"
    robust: bool = False
    bounded: bool = True

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name:
            raise ConfigError(f"statistic name {self.name!r}: expected a non-empty name without '/'")
        if self.shape not in SHAPES or self.weighting not in WEIGHTINGS:
            raise ConfigError(
                f"statistic {self.name}: shape {self.shape!r}, weighting {self.weighting!r}: expected "
                f"shape in {SHAPES} and weighting in {WEIGHTINGS}"
            )

    def keys(self, template: Mapping[str, torch.Tensor]) -> list[str]:
        """Return this statistic's namespaced keys for a model shaped like ``template``."""
        return [self.name] if self.shape == "scalar" else [f"{self.name}/{k}" for k in template]

    def owns(self, key: str) -> bool:
        """Return True when ``key`` belongs to this statistic."""
        return key == self.name if self.shape == "scalar" else key.startswith(self.name + "/")


def statistics_template(statistics: Sequence[Statistic], params: Mapping[str, torch.Tensor]) -> Params:
    """Return zeros shaped like one client's packed statistics (float32): the pipeline's update template."""
    out: Params = {}
    for s in statistics:
        if s.shape == "scalar":
            out[s.name] = torch.zeros(1)
        else:
            out.update({f"{s.name}/{k}": torch.zeros_like(v, dtype=torch.float32) for k, v in params.items()})
    return out


def view(stats: Mapping[str, torch.Tensor], statistic: Statistic) -> Params:
    """Return one statistic's tensors with the namespace stripped (a scalar: ``{name: tensor}``)."""
    if statistic.shape == "scalar":
        return {statistic.name: stats[statistic.name]}
    n = len(statistic.name) + 1
    return {k[n:]: v for k, v in stats.items() if statistic.owns(k)}


def pack(raw: Mapping[str, torch.Tensor], statistics: Sequence[Statistic], weight: float) -> Params:
    """Return a client's statistics ready for a weighted sum with weight ``weight`` (see the module docstring).

    Raises:
        ConfigError: ``weight`` is not a positive finite number while a "unit" statistic needs it.
    """
    unit = [s for s in statistics if s.weighting == "unit"]
    if not unit:
        return dict(raw)
    if not (math.isfinite(weight) and weight > 0):
        raise ConfigError(f"statistics weight {weight!r}: expected a positive finite number")
    return {k: (v / weight if any(s.owns(k) for s in unit) else v) for k, v in raw.items()}


def weighted_sum(updates: Sequence[Mapping[str, torch.Tensor]], weights: Sequence[float]) -> Params:
    """Return ``sum_k w_k u_k`` name by name, accumulated in float64 and returned as float32.

    Raises:
        NotEnoughClients: ``updates`` is empty.
        ConfigError: a different number of weights and updates.
    """
    if not updates:
        raise NotEnoughClients("no client update to aggregate")
    if len(weights) != len(updates):
        raise ConfigError(f"got {len(weights)} weights for {len(updates)} updates: expected one weight per update")
    out = {k: torch.zeros(v.shape, dtype=torch.float64) for k, v in updates[0].items()}
    for u, w in zip(updates, weights):
        for k, acc in out.items():
            acc.add_(u[k], alpha=float(w))
    return {k: v.to(torch.float32) for k, v in out.items()}


def weighted_mean(updates: Sequence[Mapping[str, torch.Tensor]], weights: Sequence[float]) -> Params:
    """Return ``sum_k w_k u_k / sum_k w_k`` (the one weighted mean of the code base).

    Raises:
        NotEnoughClients: ``updates`` is empty. ConfigError: the weights do not sum to a positive number.
    """
    total = float(sum(float(w) for w in weights))
    if not (math.isfinite(total) and total > 0):
        raise ConfigError(f"weights sum to {total!r}: expected a positive finite total")
    return weighted_sum(updates, [float(w) / total for w in weights])


def robust_mean(
    updates: Sequence[Mapping[str, torch.Tensor]],
    weights: Sequence[float],
    statistics: Sequence[Statistic],
    rule: CombineRule,
) -> Params:
    """Return the weighted mean of packed statistics with ``rule`` in place of the mean of the robust ones."""
    mean = weighted_mean(updates, weights)
    for s in statistics:
        if s.robust:
            combined = rule([view(u, s) for u in updates], [float(w) for w in weights])
            mean.update({f"{s.name}/{k}": v.to(torch.float32) for k, v in combined.items()})
    return mean


@dataclass(frozen=True)
class Contribution:
    """One client's packed statistics as they reach aggregation.

    Attributes:
        client_id: the client. stats: packed statistics (:func:`pack`); on the HE path, its ciphertext.
        weight: w_k, the weight aggregation gives it (n_k, or 1 under DP).
        metrics: e.g. ``{"train_loss": Weighted.of(loss, w_k)}``.
    """

    client_id: int
    stats: Params
    weight: float
    metrics: Mapping[str, Metric] = field(default_factory=dict)


@dataclass(frozen=True)
class Aggregate:
    """One round's aggregate: ``sums[key] = sum_k w_k x_k[key]`` (float64; a robust statistic: its combined
    mean times ``weight``), total weight, number of clients, merged metrics, and the dtype each key's
    values had on the clients (what :meth:`total` and :meth:`mean` return; float32 when not recorded)."""

    sums: Params
    weight: float
    count: int
    metrics: Mapping[str, Metric] = field(default_factory=dict)
    dtypes: Mapping[str, torch.dtype] = field(default_factory=dict)

    def _dtype(self, key: str) -> torch.dtype:
        return self.dtypes.get(key, torch.float32)

    @classmethod
    def from_mean(
        cls, mean: Mapping[str, torch.Tensor], weight: float, count: int, metrics: Mapping[str, Metric] | None = None
    ) -> Aggregate:
        """Return the aggregate whose weighted mean is ``mean`` (what a pipeline or secure sum yields)."""
        return cls(
            {k: v.to(torch.float64) * weight for k, v in mean.items()},
            float(weight),
            int(count),
            dict(metrics or {}),
            {k: v.dtype for k, v in mean.items()},
        )

    def total(self, statistic: Statistic) -> Params:
        """Return the statistic's sums in the clients' dtype, namespace stripped."""
        n = 0 if statistic.shape == "scalar" else len(statistic.name) + 1
        return {k[n:]: v.to(self._dtype(k)) for k, v in self.sums.items() if statistic.owns(k)}

    def mean(self, statistic: Statistic) -> Params:
        """Return the statistic's sums divided by the total weight.

        Raises:
            NotEnoughClients: the total weight is 0.
        """
        if not self.weight > 0:
            raise NotEnoughClients("the round's aggregate has weight 0: no client contributed")
        n = 0 if statistic.shape == "scalar" else len(statistic.name) + 1
        return {k[n:]: torch.div(v, self.weight).to(self._dtype(k)) for k, v in self.sums.items() if statistic.owns(k)}

    def metric(self, name: str) -> float:
        """Return the reduced value of metric ``name`` (NaN when absent)."""
        m = self.metrics.get(name)
        return m.value if m is not None else float("nan")


class Accumulator:
    """A running weighted sum of contributions (memory independent of their number): the streaming path.

    Args:
        precision: the sums' dtype: float64 (the default: a server folds in thousands of reports) or
            float32 (a simulator's cohort of tens: half the memory traffic per round).
    """

    def __init__(self, precision: torch.dtype = torch.float64) -> None:
        self.precision = precision
        self.sums: dict[str, torch.Tensor] = {}
        self.dtypes: dict[str, torch.dtype] = {}
        self.weight, self.count = 0.0, 0
        self.metrics: dict[str, Metric] = {}

    def add(self, c: Contribution) -> None:
        """Fold in one contribution."""
        if not self.sums:  # float64 sums; add_ promotes each float32 value without a converted copy
            self.sums = {k: torch.zeros(v.shape, dtype=self.precision) for k, v in c.stats.items()}
            self.dtypes = {k: v.dtype for k, v in c.stats.items()}
        for k, v in c.stats.items():
            self.sums[k].add_(v, alpha=c.weight)
        self.weight += c.weight
        self.count += 1
        self.metrics = merge_metrics(self.metrics, c.metrics)

    def merge(self, other: Accumulator) -> None:
        """Fold in another accumulator's sums (one Aggregator's share)."""
        if other.count == 0:
            return
        if not self.sums:
            self.sums = {k: v.clone() for k, v in other.sums.items()}
            self.dtypes = dict(other.dtypes)
        else:
            for k, v in other.sums.items():
                self.sums[k].add_(v)
        self.weight += other.weight
        self.count += other.count
        self.metrics = merge_metrics(self.metrics, other.metrics)

    def result(self) -> Aggregate:
        """Return the aggregate so far (it shares the sums' tensors: add nothing after taking it).

        Raises:
            NotEnoughClients: nothing was added.
        """
        if self.count == 0:
            raise NotEnoughClients("no client contributed to the aggregate")
        return Aggregate(dict(self.sums), self.weight, self.count, dict(self.metrics), dict(self.dtypes))


def aggregate_contributions(
    contributions: Sequence[Contribution],
    statistics: Sequence[Statistic],
    rule: CombineRule | None = None,
    precision: torch.dtype = torch.float64,
) -> Aggregate:
    """Return the aggregate of the round's contributions: weighted sums (in ``precision``), ``rule`` for
    robust statistics.

    Raises:
        NotEnoughClients: no contribution.
    """
    if not contributions:
        raise NotEnoughClients("no client contributed to the aggregate")
    if rule is None:
        acc = Accumulator(precision)
        for c in contributions:
            acc.add(c)
        return acc.result()
    weights = [c.weight for c in contributions]
    mean = robust_mean([c.stats for c in contributions], weights, statistics, rule)
    metrics: dict[str, Metric] = {}
    for c in contributions:
        metrics = merge_metrics(metrics, c.metrics)
    return Aggregate.from_mean(mean, sum(weights), len(contributions), metrics)
