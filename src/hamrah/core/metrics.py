"""Metrics that carry their own reduction, so per-round numbers merge the same way everywhere.

A client reports ``{"train_loss": Weighted(loss * w, w)}``; the simulator, the server's streaming
Aggregators, Ray actors and secure aggregation all merge such dicts with :func:`merge_metrics` and read
the round's value with ``.value``. The design follows pfl-research's ``Weighted`` and ``Summed``
metric values (``pfl.metrics``): a value that knows how to add itself to another of its kind.

Example:
    >>> a = {"train_loss": Weighted.of(2.0, 1.0)}
    >>> b = {"train_loss": Weighted.of(5.0, 2.0), "examples": Summed(30.0)}
    >>> merged = merge_metrics(a, b)
    >>> merged["train_loss"].value, merged["examples"].value
    (4.0, 30.0)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from hamrah.core.errors import ConfigError

__all__ = ["Metric", "Summed", "Weighted", "merge_metrics", "metric_values"]


@dataclass(frozen=True)
class Weighted:
    """A weighted mean under construction: ``total = sum_k w_k x_k`` and ``weight = sum_k w_k``."""

    total: float
    weight: float

    @classmethod
    def of(cls, value: float, weight: float) -> Weighted:
        """Return one observation ``value`` with weight ``weight``.

        Raises:
            ConfigError: ``weight`` is negative or not finite.
        """
        if not (math.isfinite(weight) and weight >= 0):
            raise ConfigError(f"metric weight {weight!r}: expected a finite number >= 0")
        return cls(float(value) * float(weight), float(weight))

    @property
    def value(self) -> float:
        """Return ``total / weight`` (NaN for weight 0)."""
        return self.total / self.weight if self.weight else float("nan")

    def __add__(self, other: Weighted) -> Weighted:
        if not isinstance(other, Weighted):
            return NotImplemented
        return Weighted(self.total + other.total, self.weight + other.weight)


@dataclass(frozen=True)
class Summed:
    """A plain sum over clients (counts, bytes)."""

    total: float

    @property
    def value(self) -> float:
        """Return the sum."""
        return self.total

    def __add__(self, other: Summed) -> Summed:
        if not isinstance(other, Summed):
            return NotImplemented
        return Summed(self.total + other.total)


Metric = Weighted | Summed


def merge_metrics(a: Mapping[str, Metric], b: Mapping[str, Metric]) -> dict[str, Metric]:
    """Return the union of two metric dicts, adding values present in both.

    Raises:
        ConfigError: one name holds a ``Weighted`` on one side and a ``Summed`` on the other.
    """
    out = dict(a)
    for name, value in b.items():
        if name not in out:
            out[name] = value
            continue
        mine = out[name]
        if isinstance(mine, Weighted) and isinstance(value, Weighted):  # noqa: SIM114 (two branches: mypy narrows each)
            out[name] = mine + value
        elif isinstance(mine, Summed) and isinstance(value, Summed):
            out[name] = mine + value
        else:
            raise ConfigError(
                f"metric {name!r}: cannot merge {type(mine).__name__} with "
                f"{type(value).__name__}; expected the same reduction on every client"
            )
    return out


def metric_values(metrics: Mapping[str, Metric]) -> dict[str, float]:
    """Return each metric's reduced value."""
    return {k: v.value for k, v in metrics.items()}
