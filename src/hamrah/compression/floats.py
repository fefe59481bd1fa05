"""Send the update in 16-bit floats: IEEE float16 or bfloat16 (round to nearest even, as torch casts).

Deterministic and biased only by rounding; halves the bytes of float32. float16 keeps 10 mantissa bits
but overflows above 65504; bfloat16 keeps float32's range with 7 mantissa bits (float32 values above
3.3895e38 still round to an infinity). An update with an entry the format would turn into an infinity,
or holding NaN or an infinity, is refused (``ProtocolError`` naming the tensor and the value) rather
than sent as an infinity the server would refuse.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from hamrah.compression.common import finite_input
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

FORMATS = {"float16": (torch.float16, b"FP16"), "bfloat16": (torch.bfloat16, b"BF16")}


@dataclass(frozen=True)
class HalfPayload:
    """Two bytes per value, little-endian."""

    spec: Spec
    tag: bytes
    tensors: tuple[torch.Tensor, ...]

    @property
    def nbytes(self) -> int:
        return header_nbytes(self.spec) + sum(2 * t.numel() for t in self.tensors)

    def to_bytes(self) -> bytes:
        w = WireWriter(self.tag, self.spec)
        for t in self.tensors:
            w.raw(t.contiguous().view(torch.int16).numpy().astype("<i2", copy=False).tobytes())
        return w.getvalue()


@dataclass(frozen=True)
class HalfPrecision(BaseStage):
    """Cast each tensor to ``dtype`` ("float16" or "bfloat16") for the wire.

    Example:
        >>> HalfPrecision("bfloat16").tag
        b'BF16'
    """

    dtype: str = "float16"
    name: str = "half"
    traits: ClassVar[StageTraits] = StageTraits("codec")

    def __post_init__(self) -> None:
        if self.dtype not in FORMATS:
            raise ConfigError(f"half dtype = {self.dtype!r}: expected one of {sorted(FORMATS)}")

    @property
    def tag(self) -> bytes:
        return FORMATS[self.dtype][1]

    def encode(self, update: Params, state: Any, ctx: ClientContext) -> tuple[HalfPayload, Any]:
        dtype = FORMATS[self.dtype][0]
        finite_input(update, f"half ({self.dtype})")
        tensors = []
        for name, v in update.items():
            t = v.detach().to(dtype)
            if not bool(torch.isfinite(t).all()):  # the input is finite: the cast overflowed
                top = float(v.detach().abs().max())
                limit = float(torch.finfo(dtype).max)
                raise ProtocolError(
                    f"half ({self.dtype}): update {name} holds {top:.4g}, beyond {self.dtype}'s range "
                    f"(+-{limit:.6g}); expected smaller values: clip the update first or use "
                    f"{'bfloat16' if self.dtype == 'float16' else 'float32'}"
                )
            tensors.append(t)
        return HalfPayload(spec_of(update), self.tag, tuple(tensors)), state

    def decode(self, payload: HalfPayload) -> Params:
        return {name: t.to(torch.float32) for (name, _), t in zip(payload.spec, payload.tensors)}

    def read(self, data: bytes, spec: Spec) -> HalfPayload:
        r = WireReader(data, self.tag, spec)
        dtype, tensors = FORMATS[self.dtype][0], []
        for name, shape in spec:
            raw = np.frombuffer(r.raw(2 * math.prod(shape)), dtype="<i2").astype(np.int16).reshape(shape)
            t = torch.from_numpy(raw).view(dtype)
            if not bool(torch.isfinite(t).all()):
                raise ProtocolError(f"payload {name}: expected finite values")
            tensors.append(t)
        r.finish()
        return HalfPayload(spec, self.tag, tuple(tensors))


__all__ = ["FORMATS", "HalfPayload", "HalfPrecision"]
