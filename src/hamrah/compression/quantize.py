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
from hamrah.compression.common import FLOAT32_MAX, finite_input, floats
from hamrah.core.errors import ConfigError, ProtocolError
from hamrah.core.numbers import check_number
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
_TINY = float(np.finfo(np.float64).tiny)  # a float64 divisor below every positive float32 step


@dataclass(frozen=True)
class QuantizedPayload:
    """The bucket size (uint32, 0: one bucket per tensor); per tensor, per bucket two float32 scale
    fields (offset, step), then the tensor's packed b-bit codes; value = offset + step * code."""

    spec: Spec
    tag: bytes
    bits: int
    bucket: int
    scales: tuple[np.ndarray, ...]  # float32 [buckets, 2] per tensor
    codes: tuple[np.ndarray, ...]  # uint8, flat, per tensor

    @property
    def nbytes(self) -> int:
        return (
            header_nbytes(self.spec)
            + 4
            + sum(s.nbytes + packing.packed_nbytes(c.size, self.bits) for s, c in zip(self.scales, self.codes))
        )

    def ring(self) -> RingCodes:
        """Return the codes as integers a secure sum can add (shared-range "ring" scheme only).

        Raises:
            ConfigError: the payload's scheme has per-client scales.
        """
        if not self.tag.endswith(b"RG"):
            raise ConfigError(f"quantized payload {self.tag!r}: codes are summable only with scheme 'ring'")
        rows = [sc for sc in self.scales if len(sc)]  # an empty tensor has no scale row
        offset, step = (float(v) for v in rows[0][0]) if rows else (0.0, 0.0)
        codes = {n: c.astype(np.int64) for (n, _), c in zip(self.spec, self.codes)}
        return RingCodes(self.spec, codes, self.bits, offset, step)

    def to_bytes(self) -> bytes:
        w = WireWriter(self.tag, self.spec)
        w.pack("I", self.bucket)
        for s, c in zip(self.scales, self.codes):
            w.raw(s.astype("<f4").tobytes())
            w.raw(packing.pack(c, self.bits))
        return w.getvalue()


@dataclass(frozen=True)
class StochasticQuantizer(BaseStage):
    """Quantize each tensor (or each bucket of ``bucket`` values) to ``bits`` bits, rounding stochastically.

    Args:
        bits: 2, 4 or 8.
        scheme: "minmax" (Suresh et al. 2017), "qsgd" (Alistarh et al. 2017) or "ring" (shared range,
            summable under secure aggregation).
        clip: r, the shared range [-r, r] of the "ring" scheme.
        bucket: values that share one scale (QSGD uses 512); None: one scale per tensor.

    Example:
        >>> q = StochasticQuantizer(8)
        >>> q.traits.summable_in_ring, StochasticQuantizer(8, "ring", clip=0.1).traits.summable_in_ring
        (False, True)
    """

    bits: int = 8
    scheme: str = "minmax"
    clip: float | None = None
    bucket: int | None = None
    name: str = "quantize"

    def __post_init__(self) -> None:
        if self.bits not in (2, 4, 8):
            raise ConfigError(f"quantize bits = {self.bits!r}: expected 2, 4 or 8")
        if self.scheme not in SCHEMES:
            raise ConfigError(f"quantize scheme = {self.scheme!r}: expected one of {SCHEMES}")
        if self.scheme == "ring":
            check_number("quantize clip (the ring scheme's range r)", self.clip, 0.0, open_low=True)
        if self.bucket is not None and not (isinstance(self.bucket, int) and 1 <= self.bucket < 2**32):
            raise ConfigError(f"quantize bucket = {self.bucket!r}: expected None or an integer >= 1")

    @property
    def traits(self) -> StageTraits:
        return StageTraits("codec", summable_in_ring=self.scheme == "ring")

    @property
    def tag(self) -> bytes:
        return b"Q" + bytes([48 + self.bits]) + {"minmax": b"MM", "qsgd": b"QS", "ring": b"RG"}[self.scheme]

    @property
    def levels(self) -> int:
        """Return s: the top code (minmax, ring) or the number of magnitude levels (qsgd)."""
        return int(2 ** (self.bits - 1) - 1 if self.scheme == "qsgd" else 2**self.bits - 1)

    def _rows(self, n: int) -> tuple[int, int]:
        """Return (buckets, bucket size) for a tensor of ``n`` values."""
        size = max(1, n if self.bucket is None else min(self.bucket, n))
        return math.ceil(n / size), size

    def encode(self, update: Params, state: Any, ctx: ClientContext) -> tuple[QuantizedPayload, Any]:
        finite_input(update, f"quantize ({self.scheme})")  # the ring clamps NaN to a valid code
        scales, codes = [], []
        for v in update.values():
            x = v.detach().reshape(-1).to(torch.float32)
            rows, size = self._rows(x.numel())
            pad = rows * size - x.numel()
            fill = 0.0 if self.scheme == "qsgd" or not x.numel() else float(x[-1])  # leaves min, max, norm as they are
            xr = torch.cat([x, x.new_full((pad,), fill)]).view(rows, size)
            u = torch.from_numpy(ctx.rng.random(rows * size, dtype=np.float32)).view(rows, size).to(torch.float64)
            scale, code = self._quantize(xr, u)
            scales.append(scale.numpy())
            codes.append(code.reshape(-1)[: x.numel()].to(torch.uint8).numpy())
        return QuantizedPayload(
            spec_of(update), self.tag, self.bits, self.bucket or 0, tuple(scales), tuple(codes)
        ), state

    def _quantize(self, x: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return per-row float32 (offset, step) [rows, 2] and integer codes for the rows of ``x``.

        In float64: in float32 max - min and the norm overflow for values near float32's top, and a step
        below 1e-38 (a tensor of tiny values) was clamped to 1e-38, rounding every code towards 0."""
        s, x = self.levels, x.to(torch.float64)
        if self.scheme == "qsgd":
            norm = x.norm(dim=1, keepdim=True)
            if x.numel() and float(norm.max()) > FLOAT32_MAX:
                raise ProtocolError(
                    f"quantize (qsgd): an update bucket has L2 norm {float(norm.max()):.4g}, beyond float32's "
                    f"range (+-{FLOAT32_MAX:.6g}) in which the norm is sent; expected smaller values: clip the "
                    "update first"
                )
            sent = _up(norm).to(torch.float64)  # the norm as sent, rounded up: >= every |x_i|
            scale = torch.cat([-sent.to(torch.float32), _up(sent / s)], 1)
            t = torch.where(sent > 0, x.abs() * s / sent.clamp_min(_TINY), torch.zeros_like(x))
            level = _stochastic_floor(t, u).clamp_(0, s)
            return scale, level * torch.sign(x) + s
        if self.scheme == "ring" and self.clip is not None:  # the ring scheme always has r (__post_init__)
            lo = torch.full((x.shape[0], 1), -float(self.clip), dtype=torch.float64)
            hi = -lo
            x = x.clamp(-float(self.clip), float(self.clip))
        else:
            lo, hi = x.amin(1, keepdim=True), x.amax(1, keepdim=True)  # min(dim) with indices: 15 ms on (5, 8)
        scale = torch.cat([lo.to(torch.float32), _up((hi - lo) / s)], 1)  # as sent; lo + s step >= hi
        lo, step = scale[:, :1].to(torch.float64), scale[:, 1:].to(torch.float64)
        t = torch.where(step > 0, (x - lo) / step.clamp_min(_TINY), torch.zeros_like(x))
        return scale, _stochastic_floor(t, u).clamp_(0, s)

    def _ring_scale(self) -> np.ndarray:
        """Return the ring scheme's (offset, step) as encode sends them: float32 (-r, 2r / s)."""
        r = float(self.clip or 0.0)
        step = float(_up(torch.tensor([2 * r / self.levels], dtype=torch.float64)))
        return np.array([-r, step], dtype=np.float64).astype(np.float32)

    def decode(self, payload: QuantizedPayload) -> Params:
        out = {}
        for (name, shape), scale, c in zip(payload.spec, payload.scales, payload.codes):
            rows, size = self._rows(c.size)
            code = torch.zeros(rows * size, dtype=torch.float64)
            code[: c.size] = torch.from_numpy(c.astype(np.float64))
            sc = torch.from_numpy(scale).to(torch.float64)
            value = (sc[:, :1] + sc[:, 1:] * code.view(rows, size)).clamp_(-FLOAT32_MAX, FLOAT32_MAX)  # step rounded up
            out[name] = value.to(torch.float32).reshape(-1)[: c.size].reshape(shape)
        return out

    def read(self, data: bytes, spec: Spec) -> QuantizedPayload:
        r = WireReader(data, self.tag, spec)
        (bucket,) = r.unpack("I")
        if bucket != (self.bucket or 0):
            raise ProtocolError(f"payload bucket = {bucket}: expected {self.bucket or 0}")
        top = 2 * self.levels if self.scheme == "qsgd" else self.levels
        scales, codes = [], []
        for name, shape in spec:
            n = math.prod(shape)
            rows, _ = self._rows(n)
            sc = floats(r, 2 * rows, "<f4").astype(np.float32).reshape(rows, 2)
            if self.scheme == "ring" and rows and not (sc == self._ring_scale()).all():
                raise ProtocolError(  # a client may not widen the shared range [-r, r] with its own scale
                    f"payload {name} scale: expected the ring's shared (offset, step) = {self._ring_scale().tolist()}"
                )
            c = packing.unpack(r.raw(packing.packed_nbytes(n, self.bits)), n, self.bits)
            if c.size and int(c.max()) > top:
                raise ProtocolError(f"payload {name} codes: expected codes <= {top}, got {int(c.max())}")
            scales.append(sc)
            codes.append(c)
        r.finish()
        return QuantizedPayload(spec, self.tag, self.bits, self.bucket or 0, tuple(scales), tuple(codes))


def _up(v: torch.Tensor) -> torch.Tensor:
    """Return float64 ``v`` in float32, rounded up (to nearest, a step can fall short of the range: with
    subnormal steps by up to a third, and every value above lo + s step would be clamped to the top)."""
    low = v.to(torch.float32)
    return torch.where(low.to(torch.float64) < v, torch.nextafter(low, torch.full_like(low, math.inf)), low)


def _stochastic_floor(t: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Return floor(t) + Bernoulli(t - floor(t)): an unbiased integer rounding of t."""
    fl = torch.floor(t)
    return fl + (u < (t - fl)).to(t.dtype)


def quantized_nbytes(spec: Spec, bits: int, bucket: int | None = None) -> int:
    """Return the wire size of a ``bits``-bit quantized payload of ``spec`` (the formula the tests check)."""
    sizes = [math.prod(s) for _, s in spec]
    buckets = [1 if bucket is None else max(1, math.ceil(n / bucket)) for n in sizes]
    return header_nbytes(spec) + 4 + sum(8 * b + packing.packed_nbytes(n, bits) for n, b in zip(sizes, buckets))


__all__ = ["SCHEMES", "QuantizedPayload", "StochasticQuantizer", "quantized_nbytes"]
