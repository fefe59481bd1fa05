"""SecureBoost's packing never overflows a slot; encrypted histograms equal the plaintext ones."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hamrah.core.errors import ProtocolError
from hamrah.vertical import he
from hamrah.vertical.secureboost_core import bin_offsets, histogram
from hamrah.vertical.secureboost_crypto import (
    compress,
    decompress,
    encrypted_histogram,
    packing_for,
    sparse_layout,
    subtract,
)

KEY = {}


def keys():
    """One 1024-bit key pair for the module (a test-only size, for speed; 2048 in real use)."""
    if not KEY:
        KEY["pair"] = he.keygen(1024, np.random.default_rng(7))
    return KEY["pair"]


@st.composite
def gh_rows(draw):
    """Fixed-point g in [-2^P, 2^P], h in [0, 2^(P-2)]: random, or all at an extreme."""
    p, n = draw(st.integers(8, 32)), draw(st.integers(1, 300))
    top = 1 << p
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    mode = draw(st.sampled_from(["random", "low", "high", "mixed"]))
    g = rng.integers(-top, top + 1, n)
    h = rng.integers(0, (top >> 2) + 1, n)
    if mode == "low":
        g[:] = -top
    elif mode == "high":
        g[:], h[:] = top, top >> 2
    elif mode == "mixed":
        g, h = rng.choice([-top, top], n), rng.choice([0, top >> 2], n)
    return p, g.astype(np.int64), h.astype(np.int64)


@settings(max_examples=200, deadline=None)
@given(gh_rows(), st.integers(1024, 4096), st.integers(0, 2**32 - 1))
def test_packed_sums_never_overflow_a_slot(rows, key_bits, seed):
    """Any subset sum of packed rows (the first: all rows, the worst case), folded k per plaintext and
    reduced mod n, decodes exactly."""
    p, g, h = rows
    packing = packing_for(p, len(g), key_bits)
    packed = packing.pack(g, h)
    n = (1 << (key_bits - 1)) + 1  # any modulus of key_bits bits: plaintexts live modulo n
    k = packing.per_ciphertext
    assert k * packing.width <= key_bits - 3
    sums, expect_g, expect_h = [], [], []
    rng = np.random.default_rng(seed)
    for j in range(k):
        mask = np.ones(len(g), dtype=bool) if j == 0 else rng.random(len(g)) < rng.random()
        sums.append(sum(v for v, m in zip(packed, mask) if m) % n)
        expect_g.append(int(g[mask].sum()))
        expect_h.append(int(h[mask].sum()))
    folded = 0
    for s in reversed(sums):  # Horner's rule, as the host does on ciphertexts
        folded = (folded * (1 << packing.width) + s) % n
    signed = folded - n if folded > n // 2 else folded
    got_g, got_h = packing.unpack(packing.split(signed, k))
    assert got_g.tolist() == expect_g and got_h.tolist() == expect_h


@pytest.mark.parametrize("g, h", [([(1 << 20) + 1], [0]), ([0], [-1]), ([0], [(1 << 18) + 1])])
def test_pack_refuses_values_outside_the_slots(g, h):
    with pytest.raises(ProtocolError, match="g/h packing"):
        packing_for(20, 1, 1024).pack(np.array(g), np.array(h))


@settings(max_examples=10, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_encrypted_histogram_with_subtraction_equals_plaintext(seed):
    rng = np.random.default_rng(seed)
    public, secret = keys()
    rows, feats = 40, 3
    bins = rng.integers(0, 4, size=(rows, feats)).astype(np.uint8)
    bins[:, 0] = rng.random(rows) < 0.8  # a sparse one-hot-like feature
    num_bins = np.array([2, 4, 4])
    p = 16
    g = rng.integers(-(1 << p), (1 << p) + 1, rows)
    h = rng.integers(0, (1 << (p - 2)) + 1, rows)
    packing = packing_for(p, rows, public.key_bits)
    cts = he.encrypt(public, packing.pack(g, h), rng).cts
    layout = sparse_layout(bins, num_bins)
    parent, child = np.arange(rows), np.flatnonzero(rng.random(rows) < 0.4)
    enc_parent = encrypted_histogram(cts, public.nsq, bins, parent, layout)
    enc_sib = subtract(enc_parent, encrypted_histogram(cts, public.nsq, bins, child, layout), public.nsq)
    sib = np.setdiff1d(parent, child)
    vector = compress(public, enc_sib, packing, rng)
    got_g, got_h = decompress(secret, vector, packing, layout.size)
    want_g, want_h = histogram(bins, bin_offsets(num_bins), sib, g, h)
    np.testing.assert_array_equal(layout.fill(got_g, int(g[sib].sum())), want_g)
    np.testing.assert_array_equal(layout.fill(got_h, int(h[sib].sum())), want_h)


def test_decompress_refuses_a_wrong_count():
    public, secret = keys()
    packing = packing_for(16, 10, public.key_bits)
    vector = compress(public, [he.encrypt(public, [5]).cts[0]] * 3, packing)
    with pytest.raises(ProtocolError, match="expected 2 ciphertexts, got 1"):
        decompress(secret, vector, packing, packing.per_ciphertext + 1)


@settings(max_examples=30, deadline=None)
@given(
    st.lists(st.integers(-(2**1020), 2**1020) | st.sampled_from([0, 1, -1]), min_size=1, max_size=6),
    st.integers(0, 2**32 - 1),
)
def test_key_holder_encryption_decrypts_and_adds_like_encrypt(values, seed):
    public, secret = keys()
    limit = public.max_int
    values = [max(-limit, min(limit, v)) // 2 for v in values]
    if "encryptor" not in KEY:
        KEY["encryptor"] = he.KeyHolderEncryptor(secret)
    fast = KEY["encryptor"].encrypt(values, np.random.default_rng(seed))
    assert he.decrypt(secret, fast) == values
    assert he.decrypt(secret, he.add(fast, he.encrypt(public, values))) == [2 * v for v in values]
