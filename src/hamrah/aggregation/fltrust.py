"""FLTrust: trust-weighted aggregation against the server's own update on a clean root set (Cao et al.
2021, *FLTrust: Byzantine-robust Federated Learning via Trust Bootstrapping*, NDSS, Algorithm 1 and eq. 4-6).

The server trains on a small clean "root" data set each round; its update g_0 is the reference. Each
client update g_i gets the trust score TS_i = ReLU(cos(g_i, g_0)), is rescaled to g_0's norm, and the
result is sum_i TS_i (||g_0|| / ||g_i||) g_i / sum_i TS_i. This module does no training: the driver
computes g_0 and hands it over with :meth:`FLTrust.with_reference` before the rule is called.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

import torch

from hamrah.aggregation.base import as_weights, flatten, unflatten
from hamrah.core.errors import ConfigError
from hamrah.core.numbers import check_int
from hamrah.core.params import Params


def trust_scores(x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Return TS_i = ReLU(cos(x_i, reference)) for each row of ``x`` (0 for a zero row or reference).

    Args:
        x: the ``[K, D]`` client updates.
        reference: the ``[D]`` server update g_0.
    """
    norms = x.norm(dim=1)
    ref_norm = reference.norm()
    cos = (x @ reference) / (norms * ref_norm).clamp(min=torch.finfo(x.dtype).tiny)
    return torch.relu(cos)


def fltrust_combine(x: torch.Tensor, reference: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (sum_i TS_i (||g_0|| / ||x_i||) x_i / sum_i TS_i, TS) for the rows x_i of ``x``.

    A round where every trust score is 0 (or g_0 is zero) returns the zero update: the model stays.
    Everything runs in float64 (a float32 norm or dot product of values near 3e38 overflows and
    made the scores NaN); rows that are not finite get trust 0. The result is a convex combination
    of vectors of norm ||g_0||, so its norm is at most ||g_0||.

    Args:
        x: the ``[K, D]`` client updates.
        reference: the ``[D]`` server update g_0.

    Returns:
        The ``[D]`` combined update (in ``reference``'s dtype) and the ``[K]`` trust scores (``x``'s dtype).
    """
    finite = torch.isfinite(x).all(1)
    xd = torch.where(finite[:, None], x.double(), torch.zeros((), dtype=torch.float64))
    ref = reference.double()
    if not bool(torch.isfinite(ref).all()):
        raise ConfigError("aggregator fltrust: the server's reference update is not finite")
    ts = trust_scores(xd, ref)
    total = ts.sum()
    if float(total) <= 0.0:
        return torch.zeros_like(reference), ts.to(x.dtype)
    norms = xd.norm(dim=1)
    scale = torch.where(norms > 0, ref.norm() / norms.clamp(min=torch.finfo(xd.dtype).tiny), 0.0)  # a zero row has TS 0
    return ((ts * scale) @ xd / total).to(reference.dtype), ts.to(x.dtype)


@dataclass(frozen=True)
class FLTrust:
    """FLTrust (Cao et al. 2021): clients scored by ReLU(cos) with the server's root-set update g_0,
    rescaled to ||g_0||, trust-weighted mean.

    Tolerance: not a count of attackers. An update pointing away from g_0 (cosine <= 0, e.g. sign
    flipped) gets weight 0, and no update moves the result by more than ||g_0|| however it is scaled;
    attackers aligned with g_0 keep their weight, so the rule relies on the root set being clean and
    representative. The clients' weights n_k are ignored, as in the paper (they are self-reported).
    Promise (tested over arbitrary finite inputs): the result is finite and its norm is at most
    ||g_0||, whatever and however many attackers send; a non-finite delta gets trust 0.

    Args:
        root_size: examples in the server's root set (the paper's default: 100); the driver draws
            them and computes the reference.
        reference: g_0 for the current round, set with :meth:`with_reference`.

    Example:
        >>> import torch
        >>> rule = FLTrust().with_reference({"w": torch.tensor([1.0, 0.0])})
        >>> rule([{"w": torch.tensor([3.0, 0.0])}, {"w": torch.tensor([-5.0, 0.0])}], [1, 1])["w"]
        tensor([1., 0.])
    """

    root_size: int = 100
    reference: Params | None = None
    name: str = "fltrust"
    needs_reference: ClassVar[bool] = True

    def __post_init__(self) -> None:
        check_int(f"aggregator {self.name}: root_size", self.root_size, 1)

    def check(self, cohort_size: int) -> None:
        """Accept any cohort of at least one client (the root set is checked by the driver)."""

    def tolerance(self, cohort_size: int) -> None:
        """None: the norm promise holds whatever and however many attackers send."""
        return None

    def with_reference(self, reference: Params) -> FLTrust:
        """Return this rule holding the round's server update g_0 (computed on the root set)."""
        return replace(self, reference=reference)

    def __call__(self, deltas: list[Params], weights: list[float]) -> Params:
        """Return the trust-weighted mean of the rescaled deltas.

        Raises:
            ConfigError: no reference update was set, or it names other tensors than the deltas.
            NotEnoughClients: ``deltas`` is empty.
        """
        if self.reference is None:
            raise ConfigError(
                f"aggregator {self.name}: no reference update for this round; the driver must "
                "compute the server's update on its root set and pass it with with_reference()"
            )
        x, spec = flatten(deltas)
        as_weights(weights, len(deltas))  # validated, not used: trust replaces the self-reported n_k
        ref_spec = {k: tuple(v.shape) for k, v in self.reference.items()}
        if ref_spec != {k: tuple(shape) for k, shape in spec}:
            raise ConfigError(
                f"aggregator {self.name}: the reference update holds {ref_spec}, the client deltas "
                f"{ {k: tuple(shape) for k, shape in spec} }: expected the same tensors and shapes"
            )
        ref = torch.cat([self.reference[k].reshape(-1).float() for k, _ in spec])
        out, _ = fltrust_combine(x, ref)
        return unflatten(out, spec)
