"""Helpers shared by the codecs: flat views of named parameters, residuals, checked reads."""

from __future__ import annotations

import math

import numpy as np
import torch

from hamrah.core.errors import ProtocolError
from hamrah.core.params import Params
from hamrah.core.pipeline import Spec, WireReader
from hamrah.core.updates import first_non_finite

FLOAT32_MAX = float(torch.finfo(torch.float32).max)


def numel(spec: Spec) -> int:
    """Return the number of scalars ``spec`` describes."""
    return sum(math.prod(s) for _, s in spec)


def flat(params: Params) -> torch.Tensor:
    """Return all of ``params`` as one float32 vector, in order."""
    return torch.cat([torch.zeros(0), *(v.detach().reshape(-1).to(torch.float32) for v in params.values())])


def unflat(vec: torch.Tensor, spec: Spec) -> Params:
    """Return ``vec`` cut back into named tensors of ``spec``'s shapes."""
    out, start = {}, 0
    for name, shape in spec:
        n = math.prod(shape)
        out[name] = vec[start : start + n].reshape(shape)
        start += n
    return out


def finite_input(update: Params, codec: str) -> None:
    """Refuse an update holding NaN or an infinity before it is encoded (a codec would turn it into
    garbage codes: the ring quantizer clamps NaN to a valid code a secure sum adds unseen).

    Raises:
        ProtocolError: naming the codec and the tensor.
    """
    bad = first_non_finite(update)
    if bad is not None:
        raise ProtocolError(f"{codec}: update {bad} holds NaN or infinite values; expected finite numbers to encode")


def with_residual(update: Params, residual: Params | None) -> Params:
    """Return ``update + residual`` (error feedback: what was not sent last time is added back)."""
    if residual is None:
        return {k: v.detach().to(torch.float32) for k, v in update.items()}
    return {k: v.detach().to(torch.float32) + residual[k] for k, v in update.items()}


def floats(r: WireReader, count: int, dtype: str = "<f4") -> np.ndarray:
    """Read ``count`` little-endian floats; non-finite values raise ProtocolError."""
    size = np.dtype(dtype).itemsize
    arr = np.frombuffer(r.raw(size * count), dtype=dtype)
    if not np.isfinite(arr).all():
        raise ProtocolError(f"payload values: expected finite numbers, got {int((~np.isfinite(arr)).sum())} non-finite")
    return arr


def finite_scalar(value: float, what: str) -> float:
    """Return ``value`` if finite, else raise ProtocolError naming ``what``."""
    if not math.isfinite(value):
        raise ProtocolError(f"payload {what}: expected a finite number, got {value}")
    return value
