"""Codecs: round trips, exact wire bytes, malformed bytes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hamrah.compression import (
    HalfPayload,
    HalfPrecision,
    RandomMask,
    SignEF,
    StochasticQuantizer,
    TopK,
    mask_nbytes,
    quantized_nbytes,
    topk_nbytes,
)
from hamrah.core.errors import ConfigError, ProtocolError
from hamrah.core.pipeline import ClientContext, DensePayload, header_nbytes, spec_of

CODECS = [
    StochasticQuantizer(8),
    StochasticQuantizer(4),
    StochasticQuantizer(2),
    StochasticQuantizer(4, "qsgd"),
    StochasticQuantizer(8, "qsgd", bucket=16),
    StochasticQuantizer(2, bucket=5),
    StochasticQuantizer(2, "ring", clip=2.0),
    SignEF(),
    SignEF(error_feedback=False),
    TopK(0.1),
    TopK(0.2, value_dtype="float16"),
    RandomMask(0.3),
    RandomMask(0.3, shared=True),
    HalfPrecision("float16"),
    HalfPrecision("bfloat16"),
]
IDS = [
    f"{type(c).__name__}-{getattr(c, 'bits', '')}{getattr(c, 'scheme', '')}{getattr(c, 'bucket', '')}"
    f"{getattr(c, 'dtype', '')}{getattr(c, 'p', '')}"
    for c in CODECS
]


def _update(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "fc1.weight": torch.randn(7, 13, generator=g),
        "fc1.bias": torch.randn(7, generator=g),
        "scale": torch.randn((), generator=g),
    }


def _ctx(seed=0, round_seed=11):
    return ClientContext(0, 0, np.random.default_rng(seed), round_seed=round_seed)


@pytest.mark.parametrize("codec", CODECS, ids=IDS)
def test_round_trip_keeps_names_shapes_dtype_and_bytes(codec):
    u = _update()
    spec = spec_of(u)
    payload, _ = codec.encode(u, codec.init_state(u), _ctx())
    data = payload.to_bytes()
    assert payload.nbytes == len(data)
    direct, parsed = codec.decode(payload), codec.decode(codec.read(data, spec))
    assert list(direct) == list(u)
    for k in u:
        assert direct[k].shape == u[k].shape and direct[k].dtype == torch.float32
        assert torch.equal(direct[k], parsed[k])


def test_byte_formulas():
    u = _update()
    spec, d = spec_of(u), 7 * 13 + 7 + 1
    h = header_nbytes(spec)
    dense = DensePayload(u).nbytes
    assert dense == h + 4 * d
    for bits, body in [(8, 91 + 7 + 1), (4, 46 + 4 + 1), (2, 23 + 2 + 1)]:  # ceil(n * bits / 8) per tensor
        p, _ = StochasticQuantizer(bits).encode(u, None, _ctx())
        assert p.nbytes == quantized_nbytes(spec, bits) == h + 4 + 3 * 8 + body
    p, _ = StochasticQuantizer(8, bucket=10).encode(u, None, _ctx())  # buckets: 10 + 1 + 1
    assert p.nbytes == quantized_nbytes(spec, 8, bucket=10) == h + 4 + 12 * 8 + d
    p, _ = SignEF().encode(u, None, _ctx())
    assert p.nbytes == h + 3 * 4 + (12 + 1 + 1)
    p, _ = TopK(0.1).encode(u, None, _ctx())
    assert p.nbytes == topk_nbytes(spec, 10) == h + 4 + 8 * 10
    p, _ = RandomMask(0.5).encode(u, None, _ctx())
    assert p.nbytes == mask_nbytes(spec, p.values.size) == h + 16 + 4 * p.values.size
    p, _ = HalfPrecision().encode(u, None, _ctx())
    assert p.nbytes == h + 2 * d


def test_eight_bit_is_a_quarter_of_float32_on_a_2nn_update():
    u = {
        "fc1.weight": torch.randn(200, 784),
        "fc1.bias": torch.randn(200),
        "fc2.weight": torch.randn(200, 200),
        "fc2.bias": torch.randn(200),
        "fc3.weight": torch.randn(10, 200),
        "fc3.bias": torch.randn(10),
    }
    dense = DensePayload(u).nbytes
    ratios = {b: StochasticQuantizer(b).encode(u, None, _ctx())[0].nbytes / dense for b in (8, 4, 2)}
    assert 0.25 < ratios[8] < 0.2503 and 0.125 < ratios[4] < 0.1253 and 0.0625 < ratios[2] < 0.0628
    assert SignEF().encode(u, None, _ctx())[0].nbytes / dense < 1 / 32 + 0.0003


def test_topk_sends_the_largest_coordinates():
    u = {"x": torch.tensor([0.1, -5.0, 0.2, 3.0, -0.3, 0.0, 1.0, 0.05, -2.0, 0.4])}
    p, residual = TopK(0.3).encode(u, None, _ctx())
    assert p.indices.tolist() == [1, 3, 8]
    assert TopK(0.3).decode(p)["x"].tolist() == [0, -5.0, 0, 3.0, 0, 0, 0, 0, -2.0, 0]
    assert residual["x"].tolist() == pytest.approx([0.1, 0, 0.2, 0, -0.3, 0, 1.0, 0.05, 0, 0.4])


def test_quantizer_hand_computed_minmax_levels():
    # 2 bits over [-1, 2]: levels -1, 0, 1, 2; values on a level are exact whatever the random draws
    u = {"x": torch.tensor([-1.0, 0.0, 1.0, 2.0])}
    p, _ = StochasticQuantizer(2).encode(u, None, _ctx())
    assert p.codes[0].tolist() == [0, 1, 2, 3] and p.scales[0].tolist() == [[-1.0, 1.0]]
    assert StochasticQuantizer(2).decode(p)["x"].tolist() == [-1.0, 0.0, 1.0, 2.0]


def test_shared_mask_is_the_same_for_every_client():
    u = _update()
    a, _ = RandomMask(0.3, shared=True).encode(u, None, _ctx(seed=1))
    b, _ = RandomMask(0.3, shared=True).encode(u, None, _ctx(seed=2))
    c, _ = RandomMask(0.3).encode(u, None, _ctx(seed=2))
    assert a.seed == b.seed != c.seed


@pytest.mark.parametrize("codec", CODECS, ids=IDS)
def test_malformed_bytes_raise_protocol_error(codec):
    u = _update()
    spec = spec_of(u)
    data = codec.encode(u, codec.init_state(u), _ctx())[0].to_bytes()
    other = DensePayload(u).to_bytes()
    for what, bad, want_spec in [
        ("truncated", data[:-1], spec),
        ("trailing", data + b"\x00", spec),
        ("codec tag", other, spec),
        ("names/shapes", data, (("x", (3,)),)),
        ("magic", b"\x00" + data[1:], spec),
    ]:
        with pytest.raises(ProtocolError, match=what):
            codec.read(bad, want_spec)


def test_codec_specific_malformed_fields():
    u = _update()
    spec = spec_of(u)
    topk = TopK(0.1)
    p, _ = topk.encode(u, None, _ctx())
    swapped = p.indices.copy()
    swapped[[0, 1]] = swapped[[1, 0]]
    bad = type(p)(p.spec, p.tag, swapped, p.values).to_bytes()
    with pytest.raises(ProtocolError, match="strictly increasing"):
        topk.read(bad, spec)
    p, _ = RandomMask(0.3).encode(u, None, _ctx())
    bad = type(p)(p.spec, p.seed, p.p, p.values[:-1]).to_bytes()
    with pytest.raises(ProtocolError, match="mask keeps"):
        RandomMask(0.3).read(bad, spec)
    q = StochasticQuantizer(4, "qsgd")
    p, _ = q.encode(u, None, _ctx())
    codes = list(p.codes)
    codes[0] = np.full_like(codes[0], 15)  # above 2s = 14
    with pytest.raises(ProtocolError, match="expected codes <= 14"):
        q.read(type(p)(p.spec, p.tag, p.bits, p.bucket, p.scales, tuple(codes)).to_bytes(), spec)
    p, _ = StochasticQuantizer(8).encode(u, None, _ctx())
    scales = (np.array([[math.inf, 1.0]], dtype=np.float32),) + p.scales[1:]
    with pytest.raises(ProtocolError, match="finite"):
        StochasticQuantizer(8).read(type(p)(p.spec, p.tag, p.bits, p.bucket, scales, p.codes).to_bytes(), spec)
    with pytest.raises(ProtocolError, match="bucket = 0: expected 4"):
        StochasticQuantizer(8, bucket=4).read(p.to_bytes(), spec)
    big = {k: v * 1e6 for k, v in u.items()}
    with pytest.raises(ProtocolError, match="beyond float16's range"):  # refused, not sent as an infinity
        HalfPrecision().encode(big, None, _ctx())
    hostile = HalfPayload(spec, b"FP16", tuple(v.to(torch.float16) for v in big.values()))  # holds infinities
    with pytest.raises(ProtocolError, match="finite"):
        HalfPrecision().read(hostile.to_bytes(), spec)


def test_bad_codec_configs_are_refused():
    for make, msg in [
        (lambda: StochasticQuantizer(3), "expected 2, 4 or 8"),
        (
            lambda: StochasticQuantizer(8, "ring"),
            r"quantize clip \(the ring scheme.s range r\) = None: expected a number in \(0, inf\)",
        ),
        (lambda: StochasticQuantizer(8, "log"), "expected one of"),
        (lambda: TopK(0.0), "0 < fraction <= 1"),
        (lambda: RandomMask(1.5), "0 < p <= 1"),
        (lambda: HalfPrecision("float8"), "expected one of"),
        (lambda: StochasticQuantizer(8).encode(_update(), None, _ctx())[0].ring(), "scheme 'ring'"),
    ]:
        with pytest.raises(ConfigError, match=msg):
            make()
