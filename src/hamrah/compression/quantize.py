"""Unbiased stochastic quantization to 8, 4 or 2 bits, packed so the byte count is real.

Three schemes, all rounding stochastically so that E[decode(encode(x))] = x:

- ``"minmax"``: per tensor, 2^b levels spread evenly over [min x, max x] (Suresh et al. 2017,
  *Distributed Mean Estimation with Limited Communication*, stochastic k-level quantization).
- ``"qsgd"``: per tensor, ||x||_2 * sign(x_i) * l_i / s with s = 2^(b-1) - 1 levels of |x_i| / ||x||_2
  (Alistarh et al. 2017, *QSGD: Communication-Efficient SGD via Gradient Quantization and Encoding*).
- ``"ring"``: 2^b levels over a range [-r, r] shared by every client (values beyond it are clipped, the
  only bias), so the codes of different clients can be added as integers: this is the quantization
  that secure aggregation can sum in its modular ring (Bonawitz et al. 2017, section 4).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from hamrah.compression import bits as packing
from hamrah.compression.common import finite_scalar
from hamrah.core.errors import ConfigError, ProtocolError
from hamrah.core.params import Params
from hamrah.core.pipeline import (
    BaseStage,
    ClientContext,
    RingCodes,
    Spec,
    StageTraits,
    WireReader,
    WireWriter,
    header_nbytes,
    spec_of,
)

SCHEMES = ("minmax", "qsgd", "ring")


@dataclass(frozen=True)
class QuantizedPayload:
    """Per tensor two float32 scale fields (offset, step) and packed b-bit codes."""

    spec: Spec
    tag: bytes
    bits: int
    scales: tuple[tuple[float, float], ...]
    codes: tuple[np.ndarray, ...]

    @property
    def nbytes(self) -> int:
        return header_nbytes(self.spec) + sum(8 + packing.packed_nbytes(c.size, self.bits) for c in self.codes)

    def ring(self) -> RingCodes:
        """Return the codes as integers a secure sum can add (shared-range "ring" scheme only).

        Raises:
            ConfigError: the payload's scheme has per-client scales.
        """
        if not self.tag.endswith(b"RG"):
            raise ConfigError(f"quantized payload {self.tag!r}: codes are summable only with scheme 'ring'")
        (offset, step), codes = self.scales[0], {n: c.astype(np.int64) for (n, _), c in zip(self.spec, self.codes)}
        return RingCodes(self.spec, codes, self.bits, offset, step)

    def to_bytes(self) -> bytes:
        w = WireWriter(self.tag, self.spec)
        for (a, b), c in zip(self.scales, self.codes):
            w.pack("ff", a, b)
            w.raw(packing.pack(c, self.bits))
        return w.getvalue()


@dataclass(frozen=True)
class StochasticQuantizer(BaseStage):
    """Quantize each tensor to ``bits`` bits with stochastic rounding (unbiased).

    Args:
        bits: 2, 4 or 8.
        scheme: "minmax" (Suresh et al. 2017), "qsgd" (Alistarh et al. 2017) or "ring" (shared range,
            summable under secure aggregation).
        clip: r, the shared range [-r, r] of the "ring" scheme.

    Example:
        >>> q = StochasticQuantizer(8)
        >>> q.traits.summable_in_ring, StochasticQuantizer(8, "ring", clip=0.1).traits.summable_in_ring
        (False, True)
    """

    bits: int = 8
    scheme: str = "minmax"
    clip: float | None = None
    name: str = "quantize"

    def __post_init__(self) -> None:
        if self.bits not in (2, 4, 8):
            raise ConfigError(f"quantize bits = {self.bits!r}: expected 2, 4 or 8")
        if self.scheme not in SCHEMES:
            raise ConfigError(f"quantize scheme = {self.scheme!r}: expected one of {SCHEMES}")
        if self.scheme == "ring" and not (isinstance(self.clip, (int, float)) and math.isfinite(self.clip)
                                          and self.clip > 0):
            raise ConfigError(f"quantize clip = {self.clip!r}: the ring scheme needs a positive finite range r")

    @property
    def traits(self) -> StageTraits:
        return StageTraits("codec", summable_in_ring=self.scheme == "ring")

    @property
    def tag(self) -> bytes:
        return b"Q" + bytes([48 + self.bits]) + {"minmax": b"MM", "qsgd": b"QS", "ring": b"RG"}[self.scheme]

    @property
    def levels(self) -> int:
        """Return s: the top code (minmax, ring) or the number of magnitude levels (qsgd)."""
        return 2 ** (self.bits - 1) - 1 if self.scheme == "qsgd" else 2 ** self.bits - 1

    def encode(self, update: Params, state: Any, ctx: ClientContext) -> tuple[QuantizedPayload, Any]:
        scales, codes = [], []
        for v in update.values():
            x = v.detach().reshape(-1).to(torch.float32)
            u = torch.from_numpy(ctx.rng.random(x.numel(), dtype=np.float32))
            scale, code = self._quantize(x, u)
            scales.append((float(np.float32(scale[0])), float(np.float32(scale[1]))))  # as sent
            codes.append(code.to(torch.uint8).numpy())
        return QuantizedPayload(spec_of(update), self.tag, self.bits, tuple(scales), tuple(codes)), state

    def _quantize(self, x: torch.Tensor, u: torch.Tensor) -> tuple[tuple[float, float], torch.Tensor]:
        s = self.levels
        if self.scheme == "qsgd":
            norm = float(x.norm()) if x.numel() else 0.0
            t = x.abs() * (s / norm) if norm > 0 else torch.zeros_like(x)
            level = _stochastic_floor(t, u).clamp_(0, s)
            return (-norm, norm / s), (level * torch.sign(x) + s)
        if self.scheme == "ring":
            lo, hi = -float(self.clip), float(self.clip)
            x = x.clamp(lo, hi)
        else:
            lo, hi = (float(x.min()), float(x.max())) if x.numel() else (0.0, 0.0)
        step = (hi - lo) / s
        t = (x - lo) / step if step > 0 else torch.zeros_like(x)
        return (lo, step), _stochastic_floor(t, u).clamp_(0, s)

    def decode(self, payload: QuantizedPayload) -> Params:
        out = {}
        for (name, shape), (a, b), c in zip(payload.spec, payload.scales, payload.codes):
            out[name] = (a + b * torch.from_numpy(c.astype(np.float32))).reshape(shape)
        return out

    def read(self, data: bytes, spec: Spec) -> QuantizedPayload:
        r = WireReader(data, self.tag, spec)
        scales, codes = [], []
        for name, shape in spec:
            a, b = (finite_scalar(v, f"{name} scale") for v in r.unpack("ff"))
            n = math.prod(shape)
            c = packing.unpack(r.raw(packing.packed_nbytes(n, self.bits)), n, self.bits)
            top = 2 * self.levels if self.scheme == "qsgd" else self.levels
            if c.size and int(c.max()) > top:
                raise ProtocolError(f"payload {name} codes: expected codes <= {top}, got {int(c.max())}")
            scales.append((a, b))
            codes.append(c)
        r.finish()
        return QuantizedPayload(spec, self.tag, self.bits, tuple(scales), tuple(codes))


def _stochastic_floor(t: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Return floor(t) + Bernoulli(t - floor(t)): an unbiased integer rounding of t."""
    fl = torch.floor(t)
    return fl + (u < (t - fl)).to(t.dtype)


def quantized_nbytes(spec: Spec, bits: int) -> int:
    """Return the wire size of a ``bits``-bit quantized payload of ``spec`` (the formula the tests check)."""
    return header_nbytes(spec) + sum(8 + packing.packed_nbytes(math.prod(s), bits) for _, s in spec)


__all__ = ["SCHEMES", "QuantizedPayload", "StochasticQuantizer", "quantized_nbytes"]
