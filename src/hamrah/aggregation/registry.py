"""Build an aggregator from its name and parameters, as a config names it."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch

from hamrah.aggregation.base import RobustAggregator
from hamrah.aggregation.coordinate import Median, TrimmedMean
from hamrah.aggregation.fltrust import FLTrust
from hamrah.aggregation.geomed import GeometricMedian
from hamrah.aggregation.krum import Bulyan, Krum
from hamrah.aggregation.mean import WeightedMean
from hamrah.aggregation.norm import NormBound
from hamrah.core.errors import ConfigError
from hamrah.core.numbers import check_int


def _multi_krum(f: int, m: int) -> Krum:
    return Krum(f=f, m=m, name="multi_krum")


def _fltrust(root_size: int = 100) -> FLTrust:
    return FLTrust(root_size)


def _norm_bound(bound: float, noise_std: float = 0.0, seed: int = 0) -> NormBound:
    check_int("aggregator norm_bound: seed", seed, 0)
    gen = torch.Generator().manual_seed(seed) if noise_std else None
    return NormBound(bound, noise_std, gen)


AGGREGATORS: dict[str, Callable[..., RobustAggregator]] = {
    "mean": WeightedMean,
    "median": Median,
    "trimmed_mean": TrimmedMean,
    "krum": Krum,
    "multi_krum": _multi_krum,
    "bulyan": Bulyan,
    "norm_bound": _norm_bound,
    "geomed": GeometricMedian,
    "fltrust": _fltrust,
}


def build_aggregator(name: str, **params: Any) -> RobustAggregator:
    """Return the aggregator ``name`` built with ``params``.

    Names: mean, median, trimmed_mean (beta), krum (f), multi_krum (f, m), bulyan (f),
    norm_bound (bound, noise_std, seed), geomed (nu, max_iter, tol), fltrust (root_size; the driver
    supplies each round's reference update, see :class:`~hamrah.aggregation.fltrust.FLTrust`).

    Raises:
        ConfigError: an unknown name, an unknown or missing parameter, or an impossible value.

    Example:
        >>> build_aggregator("krum", f=2).check(7)
        >>> build_aggregator("krum", f=3).check(7)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        hamrah.core.errors.ConfigError: aggregator krum: 7 clients per round is too few; ... needs at least 9
    """
    if name not in AGGREGATORS:
        raise ConfigError(f"unknown aggregator {name!r}; expected one of {', '.join(AGGREGATORS)}")
    factory = AGGREGATORS[name]
    sig = inspect.signature(factory)
    allowed = [p for p in sig.parameters if p != "name"]
    for key in params:
        if key not in allowed:
            raise ConfigError(
                f"aggregator {name}: unknown parameter {key!r}; expected {', '.join(allowed) if allowed else 'none'}"
            )
    missing = [p for p, v in sig.parameters.items() if v.default is inspect.Parameter.empty and p not in params]
    if missing:
        raise ConfigError(f"aggregator {name}: missing parameter {', '.join(missing)}")
    return factory(**params)
