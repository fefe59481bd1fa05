"""The aggregator contract and the flattening helpers every rule shares.

An aggregator is a callable ``(deltas, weights) -> Params`` that folds the clients' model changes of
one round into one change, plus ``check(cohort_size)``, which refuses, before any training, a
configuration that cannot work for that many clients per round, and ``tolerance(cohort_size)``, the
most attackers per round its promise covers (the security lab refuses a malicious share beyond it).
Rules work on one ``[K, D]`` matrix (the deltas flattened and stacked): distances, sorts and medians
then run as a few large torch ops instead of one op per parameter tensor.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol, overload

import torch

from hamrah.core.errors import ConfigError, NotEnoughClients
from hamrah.core.params import Params

Spec = list[tuple[str, torch.Size]]


class RobustAggregator(Protocol):
    """A server-side rule that folds one round's client deltas into one delta."""

    @property
    def name(self) -> str:
        """The rule's registry name (read-only: the rules are frozen dataclasses)."""
        ...

    def __call__(self, deltas: list[Params], weights: list[float]) -> Params: ...

    def check(self, cohort_size: int) -> None: ...

    def tolerance(self, cohort_size: int) -> int | None:
        """The most malicious clients among ``cohort_size`` under which the rule's promise holds, or None
        for a rule whose promise does not count attackers (mean, norm bound, FLTrust)."""
        ...


def flatten(deltas: Sequence[Params]) -> tuple[torch.Tensor, Spec]:
    """Return the deltas as one ``[K, D]`` float matrix and the names and shapes to undo it.

    Raises:
        NotEnoughClients: ``deltas`` is empty.
    """
    if not deltas:
        raise NotEnoughClients("no client delta to aggregate")
    spec = [(k, v.shape) for k, v in deltas[0].items()]
    matrix = torch.stack([torch.cat([d[k].reshape(-1).float() for k, _ in spec]) for d in deltas])
    return matrix, spec


@overload
def finite_rows(x: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...


@overload
def finite_rows(x: torch.Tensor, weights: None = None) -> tuple[torch.Tensor, None]: ...


def finite_rows(x: torch.Tensor, weights: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Return the rows of ``x`` whose values are all finite (and their weights, renormalised).

    A non-finite update is never aggregated: the rules that cannot score it as worst (everything but
    Krum and Bulyan, which give it an infinite distance) drop it before they start. The simulator and
    the server refuse such updates earlier (:func:`hamrah.core.updates.check_update`); this keeps a
    rule called directly on its own safe too.

    Raises:
        NotEnoughClients: no row is finite.
    """
    keep = torch.isfinite(x).all(1)
    if not bool(keep.any()):
        raise NotEnoughClients(
            f"none of the {x.shape[0]} client deltas is finite: expected at least one without NaN or infinite values"
        )
    if bool(keep.all()):
        return x, weights
    if weights is None:
        return x[keep], None
    w = weights[keep]
    if float(w.sum()) <= 0:
        raise NotEnoughClients("every finite client delta has weight 0: expected a positive weight on one")
    return x[keep], w / w.sum()


def unflatten(vector: torch.Tensor, spec: Spec) -> Params:
    """Return the named float32 tensors that ``vector`` (a row like :func:`flatten`'s) holds."""
    out, start = {}, 0
    for name, shape in spec:
        n = math.prod(shape)
        out[name] = vector[start : start + n].reshape(shape).to(torch.float32).clone()
        start += n
    return out


def as_weights(weights: Sequence[float], count: int) -> torch.Tensor:
    """Return ``weights`` normalised to sum to one.

    Raises:
        ConfigError: the count differs from the number of deltas, or a weight is negative, or all are zero.
    """
    if len(weights) != count:
        raise ConfigError(f"got {len(weights)} weights for {count} deltas: expected one weight per delta")
    w = torch.tensor([float(x) for x in weights], dtype=torch.float64)
    if bool((w < 0).any()) or not bool(torch.isfinite(w).all()) or float(w.sum()) <= 0:
        raise ConfigError(f"weights {list(weights)}: expected finite numbers >= 0 with a positive sum")
    return (w / w.sum()).float()


def require_cohort(name: str, cohort_size: int, needed: int, why: str) -> None:
    """Raise ``ConfigError`` naming the rule, the cohort and the bound when ``cohort_size < needed``."""
    if cohort_size < needed:
        raise ConfigError(
            f"aggregator {name}: {cohort_size} clients per round is too few; {why} needs at least {needed}"
        )
