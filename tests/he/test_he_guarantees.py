"""docs/he.md's guarantees as properties over arbitrary inputs: the packed sum of any weighted cohort up
to max_clients equals the fixed-point sum exactly (values at the bound, negatives, weights, the largest
cohort the packing takes), one more is refused, impossible layouts are refused at config time, and a
hostile device's ciphertext (garbage, wrong counts, out of range, not a unit) is refused on arrival."""

from __future__ import annotations

import math

import gmpy2
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from hamrah.core.errors import ConfigError, HamrahError, ProtocolError
from hamrah.he import HESettings, HomomorphicSum, KeyHolder, Packing, paillier_keygen, scale_packed
from hamrah.he.paillier import add, decrypt_ints, encrypt_packed

SPEC = (("w", (5,)), ("b", (3,)))


@st.composite
def cohorts(draw):
    """A packing that fits its key, and a cohort of weighted vectors whose total weight it allows."""
    packing = (
        Packing(
            key_bits=draw(st.sampled_from([512, 1024, 2048, 3072])),
            precision_bits=draw(st.integers(1, 40)),
            bound=draw(st.sampled_from([1.0, 0.1, 3.75, 2.0**-10, 1e3])),
            max_clients=draw(st.one_of(st.integers(1, 64), st.sampled_from([2**20, 2**40, 2**100]))),
        )
        if draw(st.booleans())
        else None
    )
    if packing is None:
        try:
            packing = Packing(
                draw(st.integers(64, 1024)),
                draw(st.integers(1, 51)),
                draw(st.floats(1e-6, 1e6)),
                draw(st.integers(1, 2**60)),
            )
        except ConfigError:
            assume(False)
    b = packing.bound
    length = draw(st.integers(0, 2 * packing.slots + 1))
    value = st.one_of(st.sampled_from([b, -b, 0.0]), st.floats(-b, b, allow_nan=False))
    k = draw(st.integers(1, 6))
    vectors = [np.array(draw(st.lists(value, min_size=length, max_size=length))) for _ in range(k)]
    full = draw(st.booleans())  # the largest cohort the packing takes: total weight == max_clients
    weights = [draw(st.integers(1, max(1, packing.max_clients // k))) for _ in range(k)]
    if full and packing.max_clients >= k:
        weights[-1] = packing.max_clients - sum(weights[:-1])
    assume(sum(weights) <= packing.max_clients and min(weights) >= 1)
    return packing, vectors, weights


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(cohorts())
def test_any_weighted_cohort_within_the_headroom_sums_exactly(case):
    packing, vectors, weights = case
    assert packing.slots * packing.slot_bits <= packing.key_bits - 1  # a packed sum stays below 2^(key_bits-1) <= n
    plain = [packing.pack(v) for v in vectors]
    total = [sum(w * p[i] for w, p in zip(weights, plain)) for i in range(len(plain[0]))]
    assert all(0 <= t < 2 ** (packing.key_bits - 1) for t in total)  # never wraps modulo n
    count = sum(weights)
    f = packing.precision_bits
    exact = [sum(w * round(float(v[i]) * 2**f) for w, v in zip(weights, vectors)) for i in range(len(vectors[0]))]
    assert packing.unpack_ints(total, len(vectors[0]), count) == exact
    floats = packing.unpack(total, len(vectors[0]), count)
    want = sum(w * v for w, v in zip(weights, vectors)) if len(vectors[0]) else np.zeros(0)
    # docs/he.md: at most count * 2^-(f+1), plus float64's rounding of the decoded sum
    assert np.all(np.abs(floats - want) <= count * 2.0 ** -(f + 1) + np.abs(want) * 2.0**-52 + 1e-300)
    with pytest.raises(ConfigError, match="would overflow"):
        packing.unpack_ints(total, len(vectors[0]), packing.max_clients + 1)


@given(
    key_bits=st.integers(2, 4096),
    precision_bits=st.integers(1, 52),
    bound=st.floats(1e-12, 1e15),
    max_clients=st.integers(1, 2**1100),
)
@settings(max_examples=300, deadline=None)
def test_a_layout_that_cannot_hold_the_sum_is_refused_at_config_time(key_bits, precision_bits, bound, max_clients):
    try:
        packing = Packing(key_bits, precision_bits, bound, max_clients)
    except ConfigError as err:
        assert "expected" in str(err)
        return
    top = [packing.pack([bound] * packing.slots)[0] * max_clients]  # every slot at +bound, max_clients times
    assert top[0] < 2 ** (key_bits - 1)
    got, want = packing.unpack(top, packing.slots, max_clients)[0], bound * max_clients
    assert abs(got - want) <= max_clients * 2.0 ** -(precision_bits + 1) + want * 2.0**-52


@pytest.fixture(scope="module")
def small_keys():
    return paillier_keygen(512, np.random.default_rng(7))


@settings(max_examples=25, deadline=None)
@given(
    weights=st.lists(st.integers(1, 40), min_size=1, max_size=5),
    signs=st.lists(st.sampled_from([-1.0, 1.0, 0.5, -0.25]), min_size=7, max_size=7),
)
def test_encrypted_weighted_sums_at_the_bound_decrypt_to_the_exact_fixed_point_sum(small_keys, weights, signs):
    public, secret = small_keys
    packing = Packing(512, 20, 1.0, sum(weights))  # the headroom is exactly this cohort's weight
    rng = np.random.default_rng(len(weights))
    xs = [np.array(signs) * (k + 1) / len(weights) for k in range(len(weights))]
    cts = [scale_packed(encrypt_packed(public, x, packing, rng), w) for x, w in zip(xs, weights)]
    total = cts[0]
    for c in cts[1:]:
        total = add(total, c)
    exact = [sum(w * round(float(x[i]) * 2**20) for w, x in zip(weights, xs)) for i in range(7)]
    assert decrypt_ints(secret, total) == exact
    with pytest.raises(ConfigError, match="would overflow"):
        add(total, encrypt_packed(public, xs[0], packing, rng))


PAILLIER = HESettings("paillier", key_bits=1024, precision_bits=40, max_weight=2**20)


@pytest.fixture(scope="module")
def holder():
    return KeyHolder.generate(PAILLIER, np.random.default_rng(11))


def _payload(stage, seed=0):
    g = torch.Generator().manual_seed(seed)
    update = {"w": torch.rand(5, generator=g, dtype=torch.float64) * 2 - 1, "b": torch.tensor([1.0, -1.0, 0.0])}
    return update, stage.encode(update, None, None)[0].to_bytes()


def test_the_servers_decrypted_sum_keeps_the_encodings_precision(holder):
    """The key holder's sum reaches the server in float64: a float32 sum of weight 2,200 was off by 3e-5."""
    stage = HomomorphicSum(PAILLIER, holder.public_bytes, holder)
    updates, payloads = zip(*(_payload(stage, s) for s in range(3)))
    weights = [600, 700, 900]
    total = stage.decrypt(stage.weighted_sum([stage.read(p, SPEC) for p in payloads], weights), SPEC)
    for name in ("w", "b"):
        exact = sum(w * torch.round(u[name].double() * 2.0**40) / 2.0**40 for u, w in zip(updates, weights))
        assert float((total[name] - exact).abs().max()) <= sum(weights) * 2.0**-41


def _swap_last_ciphertext(stage, data, c):
    width = (stage.public.nsquare.bit_length() + 7) // 8
    return data[:-width] + c.to_bytes(width, "big")


def test_a_ciphertext_that_shares_a_factor_with_n_is_refused(holder):
    """c = k n decrypts to (p + q)^-1 mod n whatever the others sent: whoever saw the sum could factor n."""
    stage = HomomorphicSum(PAILLIER, holder.public_bytes, holder)
    n = stage.public.n
    secret = holder._keys.secret
    assert secret.raw_decrypt(3 * n) == int(gmpy2.invert(secret.p + secret.q, n))  # why it must never be decrypted
    _, data = _payload(stage)
    for c in (n, 3 * n, n * (n - 1)):
        with pytest.raises(ProtocolError, match="shares a factor with n; expected a unit modulo n\\^2"):
            stage.read(_swap_last_ciphertext(stage, data, c), SPEC)
    for c in (0, stage.public.nsquare):
        with pytest.raises(ProtocolError, match=r"outside \[1, n\^2\)"):
            stage.read(_swap_last_ciphertext(stage, data, c), SPEC)
    assert stage.read(data, SPEC).ciphertext.count == 1  # the honest payload still parses


@pytest.fixture(scope="module")
def ckks_holder():
    return KeyHolder.generate(HESettings("ckks", poly_modulus_degree=4096, max_weight=8))


@pytest.fixture(scope="module")
def honest(holder, ckks_holder):
    """Each scheme's stage and one honest payload (a CKKS payload's size differs between encryptions)."""
    stages = {
        s: HomomorphicSum(h.settings, h.public_bytes, h) for s, h in (("paillier", holder), ("ckks", ckks_holder))
    }
    return {s: (stage, _payload(stage, 1)[1]) for s, stage in stages.items()}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
@pytest.mark.parametrize("scheme", ["paillier", "ckks"])
def test_garbage_in_a_payload_is_refused_or_harmless(honest, scheme, data):
    """Any truncation, extension or byte change of an honest payload is a ProtocolError on arrival, or it
    parses as a fresh one-client ciphertext of the right size (a changed ciphertext is still one) that the
    server can add without failing; the sum then decrypts to finite values, or, when the change made it
    garbage, is refused with a ProtocolError naming the range: nothing a device sends crashes the round."""
    stage, good = honest[scheme]
    how = data.draw(st.sampled_from(["cut", "grow", "flip"]))
    if how == "cut":
        bad = good[: data.draw(st.integers(0, len(good) - 1))]
    elif how == "grow":
        bad = good + data.draw(st.binary(min_size=1, max_size=64))
    else:
        at = data.draw(st.integers(0, len(good) - 1))
        bad = good[:at] + bytes([good[at] ^ data.draw(st.integers(1, 255))]) + good[at + 1 :]
    try:
        parsed = stage.read(bad, SPEC)
    except ProtocolError:
        return
    except HamrahError as err:  # pragma: no cover - the failure this test looks for
        pytest.fail(f"{type(err).__name__} instead of ProtocolError: {err}")
    assert parsed.ciphertext.count == 1 and parsed.ciphertext.length == 8
    honest = stage.read(good, SPEC)
    try:
        total = stage.decrypt(stage.weighted_sum([honest, parsed], [1, 1]), SPEC)
    except ProtocolError as err:
        assert "the decrypted sum (total weight 2) is refused" in str(err) and "expected" in str(err)
        return
    assert set(total) == {"w", "b"} and all(t.dtype == torch.float64 for t in total.values())
    assert math.isfinite(float(sum(t.abs().sum() for t in total.values())))
