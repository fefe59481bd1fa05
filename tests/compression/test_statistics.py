"""Statistical properties: unbiasedness, error feedback conservation, ring sums, chains of codecs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pytest
import torch

from hamrah.compression import (
    HalfPrecision,
    RandomMask,
    SignEF,
    StochasticQuantizer,
    TopK,
)
from hamrah.core.aggregate import weighted_mean
from hamrah.core.errors import ConfigError
from hamrah.core.pipeline import (
    BaseStage,
    Chain,
    ClientContext,
    StageTraits,
    process_round,
)

N = 2000


def _x(d=40, seed=0):
    return {"x": torch.randn(d, generator=torch.Generator().manual_seed(seed))}


def _mean_of_encodings(codec, x, n=N):
    rng = np.random.default_rng(0)
    total = torch.zeros_like(x["x"], dtype=torch.float64)
    for i in range(n):
        p, _ = codec.encode(x, None, ClientContext(0, i, rng, round_seed=i))
        total += codec.decode(p)["x"].double()
    return total / n


@pytest.mark.parametrize(
    "codec, sigma",
    [
        (StochasticQuantizer(8), lambda x: (x.max() - x.min()) / 255 / 2),
        (StochasticQuantizer(2), lambda x: (x.max() - x.min()) / 3 / 2),
        (StochasticQuantizer(2, "qsgd"), lambda x: x.norm() / 2),
        (StochasticQuantizer(4, "qsgd", bucket=8), lambda x: x.norm() / 7 / 2),
        (StochasticQuantizer(2, bucket=8), lambda x: (x.max() - x.min()) / 3 / 2),
        (StochasticQuantizer(4, "ring", clip=4.0), lambda x: 8.0 / 15 / 2),
        (RandomMask(0.25), lambda x: x.abs() * (0.75 / 0.25) ** 0.5),
    ],
    ids=["q8", "q2", "qsgd2", "qsgd4-bucket8", "q2-bucket8", "ring4", "mask"],
)
def test_stochastic_codecs_are_unbiased(codec, sigma):
    x = _x()
    mean = _mean_of_encodings(codec, x)
    bound = 5 * sigma(x["x"].double()) / N**0.5 + 1e-6  # std of one encoding <= sigma, per coordinate
    assert bool(((mean - x["x"].double()).abs() <= bound).all())


def test_deterministic_rounding_would_fail_the_unbiasedness_bound():
    # the bound above is tight enough to catch a biased codec: nearest rounding at 2 bits
    x = _x()["x"].double()
    step = (x.max() - x.min()) / 3
    nearest = x.min() + torch.round((x - x.min()) / step) * step
    assert bool(((nearest - x).abs() > 5 * step / 2 / N**0.5).any())


@pytest.mark.parametrize(
    "codec", [SignEF(), TopK(0.1), TopK(0.1, value_dtype="float16")], ids=["sign", "topk", "topk16"]
)
def test_error_feedback_conserves_the_sum(codec):
    inputs = [{"x": torch.randn(5, 6), "b": torch.randn(6)} for _ in range(6)]
    state, sent = codec.init_state(inputs[0]), {"x": torch.zeros(5, 6), "b": torch.zeros(6)}
    for t, u in enumerate(inputs):
        p, state = codec.encode(u, state, ClientContext(0, t, np.random.default_rng(t)))
        sent = {k: sent[k] + v for k, v in codec.decode(p).items()}
    for k in sent:
        torch.testing.assert_close(sent[k] + state[k], sum(u[k] for u in inputs), atol=1e-5, rtol=1e-5)


def test_error_feedback_off_keeps_no_state():
    _, state = TopK(0.1, error_feedback=False).encode(_x(), None, ClientContext(0, 0, np.random.default_rng(0)))
    assert state is None


@dataclass(frozen=True)
class RingSum(BaseStage):
    """Adds ring codes as integers, as secure aggregation would (without the masks)."""

    name: str = "ringsum"
    traits: ClassVar[StageTraits] = StageTraits("secure_sum")

    def encode(self, update, state, ctx):
        return ctx.upstream, state

    def aggregate(self, payloads, ctx):
        rings = [p.ring() for p in payloads]
        sums = {n: sum(r.codes[n] for r in rings) for n in rings[0].codes}
        return rings[0].decode_sum(sums, len(rings))


def test_ring_quantization_sums_under_a_secure_sum_like_the_plain_mean():
    ups = {k: _x(30, seed=k) for k in range(5)}
    w = {k: 1.0 for k in ups}
    rngs = lambda: {k: np.random.default_rng(k) for k in ups}
    q = StochasticQuantizer(8, "ring", clip=4.0)
    summed = process_round(Chain([q, RingSum()]), ups, w, {}, rngs())
    plain = process_round(Chain([q]), ups, w, {}, rngs())
    torch.testing.assert_close(summed.aggregate["x"], plain.aggregate["x"], atol=1e-5, rtol=0)
    assert summed.bytes.up == plain.bytes.up


def test_chains_refuse_per_client_codecs_under_secure_sum():
    for codec in [TopK(0.1), StochasticQuantizer(8), SignEF(), HalfPrecision()]:
        with pytest.raises(ConfigError, match="cannot be summed under secure aggregation"):
            Chain([codec, RingSum()])
    Chain([StochasticQuantizer(8, "ring", clip=1.0), RingSum()])


def test_process_round_with_codecs_keeps_client_state_and_reports_bytes():
    ups = {k: {"x": torch.randn(100), "b": torch.randn(3)} for k in range(4)}
    w = {k: float(k + 1) for k in ups}
    rngs = {k: np.random.default_rng(k) for k in ups}
    out = process_round(Chain([TopK(0.1)]), ups, w, {}, rngs, through_bytes=True)
    assert set(out.states) == set(ups) and all(s[0] is not None for s in out.states.values())
    assert set(out.bytes.up.values()) == {TopK(0.1).encode(ups[0], None, ClientContext(0, 0, rngs[0]))[0].nbytes}
    half = process_round(Chain([HalfPrecision()]), ups, w, {}, rngs)
    want = weighted_mean([ups[k] for k in ups], [w[k] for k in ups])
    torch.testing.assert_close(half.aggregate["x"], want["x"], atol=5e-3, rtol=0)
