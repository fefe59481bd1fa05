"""1-bit sign compression with error feedback (Karimireddy et al. 2019, *Error Feedback Fixes SignSGD
and other Gradient Compression Schemes*, Algorithm 2 "EF-SignSGD").

Each client adds its residual e to the update, p = x + e, sends one bit per coordinate (the sign of
p) and one float32 per tensor, the scale mean|p| = ||p||_1 / d, and keeps e' = p - scale * sign(p).
Over rounds, sum(sent) + e_T = sum(inputs) exactly (up to float rounding): nothing is lost, only
delayed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from hamrah.compression import bits as packing
from hamrah.compression.common import finite_input, finite_scalar, with_residual
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


@dataclass(frozen=True)
class SignPayload:
    """Per tensor a float32 scale and one packed bit per coordinate (1: >= 0)."""

    spec: Spec
    scales: tuple[float, ...]
    signs: tuple[np.ndarray, ...]

    @property
    def nbytes(self) -> int:
        return header_nbytes(self.spec) + sum(4 + packing.packed_nbytes(s.size, 1) for s in self.signs)

    def to_bytes(self) -> bytes:
        w = WireWriter(SignEF.tag, self.spec)
        for scale, s in zip(self.scales, self.signs):
            w.pack("f", scale)
            w.raw(packing.pack(s, 1))
        return w.getvalue()


@dataclass(frozen=True)
class SignEF(BaseStage):
    """Send sign(x + e) * mean|x + e| per tensor; keep the residual e on the client.

    Args:
        error_feedback: keep and add back the residual (False: plain scaled signSGD, biased).

    Example:
        >>> SignEF().traits.kind
        'codec'
    """

    error_feedback: bool = True
    name: str = "sign"
    traits: ClassVar[StageTraits] = StageTraits("codec")
    tag = b"SGN1"

    def encode(self, update: Params, state: Params | None, ctx: ClientContext) -> tuple[SignPayload, Params | None]:
        p = with_residual(update, state if self.error_feedback else None)
        finite_input(p, "sign")  # the update, or the update plus the residual, overflowed
        scales, signs, residual = [], [], {}
        for name, v in p.items():
            # float64: a float32 sum of |values| near float32's top overflows; their mean does not
            scale = float(np.float32(v.abs().to(torch.float64).mean())) if v.numel() else 0.0
            sign = v >= 0
            scales.append(scale)
            signs.append(sign.reshape(-1).numpy().astype(np.uint8))
            if self.error_feedback:
                residual[name] = v - scale * (sign.to(torch.float32) * 2 - 1)
        payload = SignPayload(spec_of(update), tuple(scales), tuple(signs))
        return payload, (residual if self.error_feedback else None)

    def decode(self, payload: SignPayload) -> Params:
        out = {}
        for (name, shape), scale, s in zip(payload.spec, payload.scales, payload.signs):
            pos = torch.from_numpy(s.astype(bool))  # not s * 2 scale - scale: 2 scale overflows above 1.7e38
            out[name] = torch.where(pos, scale, -scale).to(torch.float32).reshape(shape)
        return out

    def read(self, data: bytes, spec: Spec) -> SignPayload:
        r = WireReader(data, self.tag, spec)
        scales, signs = [], []
        for name, shape in spec:
            (scale,) = r.unpack("f")
            scales.append(finite_scalar(scale, f"{name} scale"))
            n = math.prod(shape)
            signs.append(packing.unpack(r.raw(packing.packed_nbytes(n, 1)), n, 1))
        r.finish()
        return SignPayload(spec, tuple(scales), tuple(signs))


__all__ = ["SignEF", "SignPayload"]
