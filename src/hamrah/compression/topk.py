"""Top-k sparsification with error feedback: send the k largest-magnitude coordinates of the whole
update (indices and values), keep the rest as a residual added to the next round's update.

Aji & Heafield 2017, *Sparse Communication for Distributed Gradient Descent* (drop all but the largest
gradients, keep the remainder locally); Stich et al. 2018, *Sparsified SGD with Memory* (top-k with
memory converges at the rate of SGD). k is chosen over the whole update (one global threshold), not
per tensor. With float16 values, a value beyond float16's range is sent as +-65504 (saturated, never
an infinity); with error feedback the excess stays in the residual, so nothing is lost.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from hamrah.compression.common import finite_input, flat, floats, numel, unflat, with_residual
from hamrah.core.errors import ConfigError, ProtocolError
from hamrah.core.params import Params
from hamrah.core.pipeline import (
    BaseStage,
    ClientContext,
    Spec,
    StageTraits,
    WireReader,
    WireWriter,
    header_nbytes,
    spec_of,
)

VALUE_DTYPES = {"float32": "<f4", "float16": "<f2"}
_HALF_MAX = float(np.finfo(np.float16).max)


@dataclass(frozen=True)
class SparsePayload:
    """k (uint32), k strictly increasing uint32 flat indices, k values (float32 or float16)."""

    spec: Spec
    tag: bytes
    indices: np.ndarray
    values: np.ndarray

    @property
    def nbytes(self) -> int:
        return header_nbytes(self.spec) + 4 + 4 * self.indices.size + self.values.itemsize * self.values.size

    def to_bytes(self) -> bytes:
        w = WireWriter(self.tag, self.spec)
        w.pack("I", self.indices.size)
        w.raw(self.indices.astype("<u4").tobytes())
        w.raw(self.values.tobytes())
        return w.getvalue()


@dataclass(frozen=True)
class TopK(BaseStage):
    """Keep the ``fraction`` of coordinates with the largest |x + e|; e keeps what was not sent.

    Args:
        fraction: k / d, in (0, 1].
        error_feedback: keep and add back the residual (Stich et al.'s memory).
        value_dtype: "float32" or "float16" for the values sent.

    Example:
        >>> TopK(0.01).k(199_210)
        1992
    """

    fraction: float = 0.01
    error_feedback: bool = True
    value_dtype: str = "float32"
    name: str = "topk"
    traits: ClassVar[StageTraits] = StageTraits("codec")

    def __post_init__(self) -> None:
        if not (isinstance(self.fraction, (int, float)) and 0 < self.fraction <= 1):
            raise ConfigError(f"topk fraction = {self.fraction!r}: expected 0 < fraction <= 1")
        if self.value_dtype not in VALUE_DTYPES:
            raise ConfigError(f"topk value_dtype = {self.value_dtype!r}: expected one of {sorted(VALUE_DTYPES)}")

    @property
    def tag(self) -> bytes:
        return b"TOPK" if self.value_dtype == "float32" else b"TOPH"

    def k(self, d: int) -> int:
        """Return the number of coordinates sent out of ``d``."""
        return min(d, max(1, round(self.fraction * d)))

    def encode(self, update: Params, state: Params | None, ctx: ClientContext) -> tuple[SparsePayload, Params | None]:
        spec = spec_of(update)
        summed = with_residual(update, state if self.error_feedback else None)
        finite_input(summed, "topk")  # the update, or the update plus the residual, overflowed
        p = flat(summed)
        idx = torch.topk(p.abs(), self.k(p.numel()), sorted=False).indices.sort().values
        kept = p[idx]
        if self.value_dtype == "float16":  # saturate: never an infinity (the residual keeps the excess)
            kept = kept.clamp(-_HALF_MAX, _HALF_MAX)
        values = kept.numpy().astype(VALUE_DTYPES[self.value_dtype])
        payload = SparsePayload(spec, self.tag, idx.numpy().astype(np.uint32), values)
        if not self.error_feedback:
            return payload, None
        p[idx] -= torch.from_numpy(values.astype(np.float32))
        return payload, unflat(p, spec)

    def decode(self, payload: SparsePayload) -> Params:
        vec = torch.zeros(numel(payload.spec))
        vec[torch.from_numpy(payload.indices.astype(np.int64))] = torch.from_numpy(payload.values.astype(np.float32))
        return unflat(vec, payload.spec)

    def read(self, data: bytes, spec: Spec) -> SparsePayload:
        r = WireReader(data, self.tag, spec)
        d = numel(spec)
        (k,) = r.unpack("I")
        if k > d:
            raise ProtocolError(f"payload k = {k}: expected at most {d} coordinates")
        idx = np.frombuffer(r.raw(4 * k), dtype="<u4").astype(np.uint32)
        if k and (int(idx[-1]) >= d or (k > 1 and not (np.diff(idx.astype(np.int64)) > 0).all())):
            raise ProtocolError(f"payload indices: expected strictly increasing indices below {d}")
        values = floats(r, k, VALUE_DTYPES[self.value_dtype])
        r.finish()
        return SparsePayload(spec, self.tag, idx, values)


def topk_nbytes(spec: Spec, k: int, value_bytes: int = 4) -> int:
    """Return the wire size of a top-k payload with ``k`` coordinates."""
    return header_nbytes(spec) + 4 + (4 + value_bytes) * k


__all__ = ["SparsePayload", "TopK", "topk_nbytes"]
