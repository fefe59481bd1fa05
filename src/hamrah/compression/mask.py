"""Random masks: send a seeded random subset of coordinates, only the seed and the values.

Konecny et al. 2016, *Federated Learning: Strategies for Improving Communication Efficiency*,
section 3 ("subsampling": each client sends a random subset of the update's coordinates, the server
averages the subsampled updates; the subset is generated from a seed, so only the seed and the values
travel). Each coordinate is kept with probability p and scaled by 1/p, so the decoded update is an
unbiased estimate of the input. With ``shared=True`` every client of a round uses the same mask (from
the round's shared seed), as in Konecny et al.'s structured "random mask" update.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from hamrah.compression.common import FLOAT32_MAX, finite_input, finite_scalar, flat, floats, numel, unflat
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


def mask_of(seed: int, d: int, p: float) -> np.ndarray:
    """Return the boolean mask of ``d`` coordinates, each kept with probability ``p``, drawn from ``seed``."""
    mask: np.ndarray = np.random.default_rng(seed).random(d, dtype=np.float32) < np.float32(p)
    return mask


@dataclass(frozen=True)
class MaskedPayload:
    """uint64 seed, float32 p, uint32 count, then the count kept values (float32)."""

    spec: Spec
    seed: int
    p: float
    values: np.ndarray

    @property
    def nbytes(self) -> int:
        return header_nbytes(self.spec) + 8 + 4 + 4 + 4 * self.values.size

    def to_bytes(self) -> bytes:
        w = WireWriter(RandomMask.tag, self.spec)
        w.pack("QfI", self.seed, self.p, self.values.size)
        w.raw(self.values.astype("<f4").tobytes())
        return w.getvalue()


@dataclass(frozen=True)
class RandomMask(BaseStage):
    """Keep each coordinate with probability ``p`` (from a sent seed) and rescale by 1/p.

    Args:
        p: the expected fraction of coordinates sent, in (0, 1].
        shared: draw the mask from the round's shared seed (the same coordinates for every client).

    Example:
        >>> RandomMask(0.1).traits.kind
        'codec'
    """

    p: float = 0.1
    shared: bool = False
    name: str = "mask"
    traits: ClassVar[StageTraits] = StageTraits("codec")
    tag = b"RMSK"

    def __post_init__(self) -> None:
        if not (isinstance(self.p, (int, float)) and 0 < self.p <= 1):
            raise ConfigError(f"mask p = {self.p!r}: expected 0 < p <= 1")

    def encode(self, update: Params, state: Any, ctx: ClientContext) -> tuple[MaskedPayload, Any]:
        finite_input(update, "mask")
        x = flat(update).numpy()
        seed = int(ctx.round_seed) % 2**64 if self.shared else int(ctx.rng.integers(2**63))
        p = float(np.float32(self.p))
        values = x[mask_of(seed, x.size, p)]
        top = float(np.abs(values).max()) if values.size else 0.0
        if top / p > FLOAT32_MAX:  # the server's value / p would be an infinity
            raise ProtocolError(
                f"mask: update holds {top:.4g}, which / p = {p:.4g} is beyond float32's range; "
                "expected smaller values: clip the update first"
            )
        return MaskedPayload(spec_of(update), seed, p, values), state

    def decode(self, payload: MaskedPayload) -> Params:
        d = numel(payload.spec)
        vec = np.zeros(d, dtype=np.float32)
        vec[mask_of(payload.seed, d, payload.p)] = payload.values / np.float32(payload.p)
        return unflat(torch.from_numpy(vec), payload.spec)

    def read(self, data: bytes, spec: Spec) -> MaskedPayload:
        r = WireReader(data, self.tag, spec)
        seed, p, count = r.unpack("QfI")
        expected = float(np.float32(self.p))
        if finite_scalar(p, "p") != expected:  # a client may not pick its own rescaling 1/p
            raise ProtocolError(f"payload p = {p}: expected this chain's p = {expected}")
        kept = int(mask_of(seed, numel(spec), p).sum())
        if count != kept:
            raise ProtocolError(f"payload count = {count}: the seed's mask keeps {kept} coordinates")
        values = floats(r, count).astype(np.float32)
        r.finish()
        if values.size and float(np.abs(values).max()) / p > FLOAT32_MAX:
            raise ProtocolError(f"payload values: expected values that / p = {p} stay within float32's range")
        return MaskedPayload(spec, seed, p, values)


def mask_nbytes(spec: Spec, kept: int) -> int:
    """Return the wire size of a random-mask payload keeping ``kept`` values."""
    return header_nbytes(spec) + 16 + 4 * kept


__all__ = ["MaskedPayload", "RandomMask", "mask_nbytes", "mask_of"]
