"""Named parameter arrays: the model state that travels between server and clients."""

from __future__ import annotations

from typing import Mapping

import torch

Params = dict[str, torch.Tensor]


def clone(params: Mapping[str, torch.Tensor]) -> Params:
    """Return a detached copy of ``params``."""
    return {k: v.detach().clone() for k, v in params.items()}


def num_parameters(params: Mapping[str, torch.Tensor]) -> int:
    """Return the total number of scalars in ``params``."""
    return sum(v.numel() for v in params.values())


def stack(params: Mapping[str, torch.Tensor], copies: int) -> Params:
    """Return ``params`` repeated along a new leading dimension of size ``copies``."""
    return {k: v.detach().unsqueeze(0).repeat(copies, *([1] * v.dim())) for k, v in params.items()}


def unstack(stacked: Mapping[str, torch.Tensor], index: int) -> Params:
    """Return the ``index``-th slice of stacked parameters."""
    return {k: v[index] for k, v in stacked.items()}


def sub(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> Params:
    """Return ``a - b`` name by name."""
    return {k: a[k] - b[k] for k in a}


def max_abs_diff(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> float:
    """Return the largest absolute difference between two parameter sets."""
    return max(float((a[k].detach() - b[k].detach()).abs().max()) for k in a)
