"""Property tests of the codecs' documented claims over arbitrary float32 tensors (zeros, one element,
empty, subnormal and near-float32-max values): error bounds, top-k selection, error-feedback
conservation, sign scaling, refusal of non-finite input, 16-bit overflow, and hostile bytes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from hamrah.compression import HalfPrecision, RandomMask, SignEF, StochasticQuantizer, TopK
from hamrah.compression.quantize import QuantizedPayload
from hamrah.core.errors import ProtocolError
from hamrah.core.pipeline import ClientContext, Identity, spec_of

F32_MAX = float(np.finfo(np.float32).max)
PROPS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

shapes = hnp.array_shapes(min_dims=0, max_dims=2, min_side=0, max_side=6)
finite32 = st.floats(width=32, allow_nan=False, allow_infinity=False)
arrays = hnp.arrays(np.float32, shapes, elements=finite32)
# values a codec must carry without refusal: finite and far from float32's top
moderate = hnp.arrays(np.float32, shapes, elements=st.floats(-(2.0**100), 2.0**100, width=32))


@st.composite
def updates(draw, values=arrays):
    names = draw(st.lists(st.sampled_from(["a", "b.weight", "c"]), min_size=1, max_size=3, unique=True))
    return {n: torch.from_numpy(draw(values).copy()) for n in names}


def _ctx(seed=0):
    return ClientContext(0, 0, np.random.default_rng(seed), round_seed=seed)


def _through_bytes(codec, payload, u):
    return codec.decode(codec.read(payload.to_bytes(), spec_of(u)))


def _maxabs(t):
    return float(t.abs().max()) if t.numel() else 0.0


def _finite(params):
    return all(bool(torch.isfinite(v).all()) for v in params.values())


CODECS = [
    StochasticQuantizer(8),
    StochasticQuantizer(2, bucket=3),
    StochasticQuantizer(4, "qsgd"),
    StochasticQuantizer(8, "qsgd", bucket=4),
    StochasticQuantizer(4, "ring", clip=1.5),
    SignEF(),
    TopK(0.5),
    TopK(0.3, value_dtype="float16"),
    RandomMask(0.5),
    HalfPrecision("float16"),
    HalfPrecision("bfloat16"),
]


def _may_refuse(codec, u) -> bool:
    """Whether the codec may refuse a finite update: the wire format cannot carry it."""
    top = max((float(v.abs().max()) for v in u.values() if v.numel()), default=0.0)
    if isinstance(codec, HalfPrecision):
        return top > (65504 if codec.dtype == "float16" else 3.38e38)
    if isinstance(codec, StochasticQuantizer) and codec.scheme == "qsgd":
        return top > F32_MAX / 64  # a bucket's L2 norm beyond float32's range
    if isinstance(codec, RandomMask):
        return top > F32_MAX * codec.p
    return False


@pytest.mark.parametrize("codec", CODECS, ids=lambda c: type(c).__name__)
@PROPS
@given(u=updates())
def test_any_finite_update_decodes_to_finite_values_or_is_refused_clearly(codec, u):
    try:
        payload, state = codec.encode(u, codec.init_state(u), _ctx())
    except ProtocolError as e:
        assert _may_refuse(codec, u), f"refused an update it can carry: {e}"
        assert "beyond" in str(e)
        return
    direct = codec.decode(payload)
    assert _finite(direct), direct
    assert state is None or _finite(state)
    parsed = _through_bytes(codec, payload, u)
    for k, v in u.items():
        assert direct[k].shape == v.shape and torch.equal(direct[k], parsed[k])


@pytest.mark.parametrize("codec", CODECS, ids=lambda c: type(c).__name__)
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_input_is_refused_naming_the_tensor(codec, bad):
    u = {"ok": torch.ones(3), "w": torch.tensor([1.0, bad, 2.0])}
    with pytest.raises(ProtocolError, match=r"update w holds NaN or infinite values"):
        codec.encode(u, codec.init_state(u), _ctx())


@pytest.mark.parametrize("codec", [StochasticQuantizer(8), StochasticQuantizer(2, bucket=3)], ids=["q8", "q2-b3"])
@PROPS
@given(u=updates(), seed=st.integers(0, 2**32 - 1))
@example(u={"w": torch.tensor([1e-45, -1e-40, 0.0, 5e-41])}, seed=0)  # a range below 1e-38 * levels
def test_minmax_error_is_at_most_one_step_of_the_values_own_range(codec, u, seed):
    payload, _ = codec.encode(u, None, _ctx(seed))
    out = codec.decode(payload)
    for (name, _), scale in zip(payload.spec, payload.scales):
        x, y = u[name].reshape(-1).double(), out[name].reshape(-1).double()
        rows, size = codec._rows(x.numel())
        for r in range(rows):
            xs, ys = x[r * size : (r + 1) * size], y[r * size : (r + 1) * size]
            offset, step = float(scale[r, 0]), float(scale[r, 1])
            assert offset == float(xs.min())  # the minimum is sent exactly
            exact = (float(xs.max()) - float(xs.min())) / codec.levels
            assert exact <= step <= exact * (1 + 2**-23) + 1.5e-45  # rounded up: offset + s step covers the max
            tol = step * (1 + 1e-6) + 2**-23 * float(xs.abs().max())
            assert float((ys - xs).abs().max()) <= tol  # before: a range below 2.5e-36 decoded all to min


@PROPS
@given(u=updates(values=moderate), seed=st.integers(0, 2**32 - 1))
@example(u={"w": torch.tensor([1e-40, -1e-40, 3e-41])}, seed=0)  # a norm below 1e-38
def test_qsgd_and_ring_errors_are_at_most_one_level(u, seed):
    qsgd, ring = StochasticQuantizer(4, "qsgd"), StochasticQuantizer(4, "ring", clip=1.5)
    p, _ = qsgd.encode(u, None, _ctx(seed))
    for name, y in qsgd.decode(p).items():
        x = u[name].double()
        norm = float(x.norm()) if x.numel() else 0.0
        assert _maxabs(y.double() - x) <= norm / qsgd.levels * (1 + 1e-5) + 1e-44
    p, _ = ring.encode(u, None, _ctx(seed))
    step = 3.0 / ring.levels
    for name, y in ring.decode(p).items():
        x = u[name].double().clamp(-1.5, 1.5)  # beyond [-r, r] clipped: the scheme's only bias
        assert _maxabs(y.double() - x) <= step * (1 + 1e-5)


@pytest.mark.parametrize("value_dtype", ["float32", "float16"])
@PROPS
@given(u=updates(values=moderate), fraction=st.floats(0.01, 1.0))
def test_topk_sends_exactly_the_k_largest_magnitudes(value_dtype, u, fraction):
    codec = TopK(fraction, error_feedback=False, value_dtype=value_dtype)
    payload, _ = codec.encode(u, None, _ctx())
    flat = torch.cat([torch.zeros(0)] + [v.reshape(-1) for v in u.values()])
    d = flat.numel()
    assert payload.indices.size == codec.k(d) == (min(d, max(1, round(fraction * d))))
    sent = np.zeros(d, dtype=bool)
    sent[payload.indices.astype(np.int64)] = True
    mags = flat.abs().numpy()
    if sent.any() and (~sent).any():
        assert mags[sent].min() >= mags[~sent].max()
    expected = flat.numpy()[sent]
    if value_dtype == "float16":  # saturated at +-65504, never an infinity
        expected = np.clip(expected, -65504, 65504).astype(np.float16)
    assert np.array_equal(payload.values, expected.astype(payload.values.dtype))


@pytest.mark.parametrize("codec", [TopK(0.2), TopK(0.3, value_dtype="float16"), SignEF()], ids=str)
@PROPS
@given(rounds=st.lists(hnp.arrays(np.float32, 7, elements=st.floats(-(2.0**20), 2.0**20, width=32)), min_size=1))
def test_error_feedback_sent_plus_residual_equals_the_sum_of_updates(codec, rounds):
    state, sent = codec.init_state({"w": torch.zeros(7)}), torch.zeros(7, dtype=torch.float64)
    for i, x in enumerate(rounds):
        payload, state = codec.encode({"w": torch.from_numpy(x.copy())}, state, _ctx(i))
        sent += codec.decode(payload)["w"].double()
    stacked = np.stack(rounds).astype(np.float64)
    total = torch.from_numpy(stacked.sum(0))
    scale = float(np.abs(stacked).max()) * len(rounds)
    assert torch.allclose(sent + state["w"].double(), total, rtol=0, atol=2**-20 * scale + 1e-30)


def test_float16_topk_keeps_the_excess_beyond_65504_in_the_residual():
    codec = TopK(0.5, value_dtype="float16")
    payload, residual = codec.encode({"w": torch.tensor([1e6, 1.0])}, None, _ctx())
    assert payload.values.tolist() == [65504.0] and residual["w"].tolist() == [1e6 - 65504, 1.0]


@PROPS
@given(u=updates(values=moderate))
def test_sign_sends_the_sign_times_the_mean_magnitude_per_tensor(u):
    payload, _ = SignEF(error_feedback=False).encode(u, None, _ctx())
    out = SignEF().decode(payload)
    for name, x in u.items():
        scale = float(np.float32(x.double().abs().mean())) if x.numel() else 0.0
        assert torch.equal(out[name], torch.where(x >= 0, scale, -scale).to(torch.float32))


def test_sign_of_values_near_float32_max_is_finite_and_conserves_the_sum():
    x = {"w": torch.tensor([3e38, 3e38, -3e38])}
    payload, residual = SignEF().encode(x, None, _ctx())  # before: the float32 sum overflowed to inf
    sent = SignEF().decode(SignEF().read(payload.to_bytes(), spec_of(x)))["w"].double()
    assert _finite({"w": sent}) and _finite(residual)
    assert torch.allclose(sent + residual["w"].double(), x["w"].double(), rtol=1e-6)


def test_a_hostile_sign_scale_near_float32_max_decodes_finite():
    x = {"w": torch.tensor([1.0, -1.0])}
    payload, _ = SignEF().encode(x, None, _ctx())
    hostile = type(payload)(payload.spec, (3e38,), payload.signs)  # finite, passes read
    out = SignEF().decode(SignEF().read(hostile.to_bytes(), spec_of(x)))["w"]
    assert out.tolist() == pytest.approx([3e38, -3e38], rel=1e-6)  # before: 2 * scale overflowed to inf / NaN


def test_sixteen_bit_formats_refuse_an_entry_they_would_turn_into_infinity():
    with pytest.raises(ProtocolError, match=r"half \(float16\): update w holds 7e\+04, beyond float16's range"):
        HalfPrecision("float16").encode({"w": torch.tensor([1.0, -7e4])}, None, _ctx())
    with pytest.raises(ProtocolError, match="beyond bfloat16's range"):
        HalfPrecision("bfloat16").encode({"w": torch.tensor([3.4e38])}, None, _ctx())
    payload, _ = HalfPrecision("float16").encode({"w": torch.tensor([65504.0, -1e-8])}, None, _ctx())
    assert HalfPrecision("float16").decode(payload)["w"].tolist() == [65504.0, 0.0]


def test_minmax_of_values_spanning_float32_decodes_finite():
    x = {"w": torch.tensor([3.4e38, -3.4e38, 0.0])}
    codec = StochasticQuantizer(8)
    payload, _ = codec.encode(x, None, _ctx())  # before: max - min overflowed, every value NaN
    out = _through_bytes(codec, payload, x)["w"]
    assert _finite({"w": out}) and out[0] > 3.3e38 and out[1] == -3.4e38


def test_the_ring_refuses_a_payload_whose_scale_widens_the_shared_range():
    codec, x = StochasticQuantizer(4, "ring", clip=1.0), {"w": torch.tensor([0.5, -0.5])}
    p, _ = codec.encode(x, None, _ctx())
    wide = QuantizedPayload(p.spec, p.tag, p.bits, p.bucket, (np.array([[-1e30, 1e29]], np.float32),), p.codes)
    with pytest.raises(ProtocolError, match="expected the ring's shared"):
        codec.read(wide.to_bytes(), spec_of(x))


def test_ring_codes_of_an_update_whose_first_tensor_is_empty():
    codec = StochasticQuantizer(4, "ring", clip=1.0)
    p, _ = codec.encode({"e": torch.zeros(0), "w": torch.tensor([0.25])}, None, _ctx())
    ring = p.ring()  # before: IndexError on the empty tensor's scale
    assert (ring.offset, ring.step) == pytest.approx((-1.0, 2 / 15))


def test_mask_refuses_a_payload_with_a_p_other_than_the_chains():
    x = {"w": torch.arange(20, dtype=torch.float32)}
    p, _ = RandomMask(0.5).encode(x, None, _ctx())
    with pytest.raises(ProtocolError, match="payload p = 0.5: expected this chain's p = 0.25"):
        RandomMask(0.25).read(p.to_bytes(), spec_of(x))  # its values would be rescaled by 1/0.5, not 1/0.25


def test_the_dense_payload_refuses_non_finite_values():
    x = {"w": torch.tensor([1.0, math.nan])}
    with pytest.raises(ProtocolError, match="payload w: expected finite values"):
        Identity().read(Identity().encode(x, None, _ctx())[0].to_bytes(), spec_of(x))


HOSTILE = [*CODECS, Identity()]


@pytest.mark.parametrize("codec", HOSTILE, ids=lambda c: type(c).__name__)
@PROPS
@given(data=st.data())
def test_mutated_bytes_are_refused_or_decode_to_finite_tensors_of_the_spec(codec, data):
    u = {"a": torch.linspace(-2, 2, 9).reshape(3, 3), "b": torch.tensor([0.5])}
    payload, _ = codec.encode(u, codec.init_state(u), _ctx())
    raw = bytearray(payload.to_bytes())
    edit = data.draw(st.sampled_from(["truncate", "flip", "append", "splice"]))
    if edit == "truncate":
        raw = raw[: data.draw(st.integers(0, len(raw) - 1))]
    elif edit == "flip":
        for _ in range(data.draw(st.integers(1, 4))):
            raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    elif edit == "append":
        raw += data.draw(st.binary(min_size=1, max_size=16))
    else:
        start = data.draw(st.integers(0, len(raw)))
        raw[start:start] = data.draw(st.binary(min_size=1, max_size=8))
    assume(bytes(raw) != payload.to_bytes())
    try:
        parsed = codec.read(bytes(raw), spec_of(u))
    except ProtocolError:
        return
    out = codec.decode(parsed)
    assert list(out) == list(u) and all(out[k].shape == u[k].shape for k in u)
    assert _finite(out), out
