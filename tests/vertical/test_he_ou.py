"""Okamoto-Uchiyama: signed values round-trip, the homomorphic operations (with hamrah.vertical.he's
generic ones) compute what they claim, vertical LR's packed masked gradients unpack exactly, and the
key holder refuses to return a decryption outside the protocol's range (OU's key guard)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hamrah.core.errors import ProtocolError
from hamrah.vertical import he, he_ou
from hamrah.vertical.lr_ops import SLOT_BITS, Enc, PaillierOps

KEY = he_ou.keygen(1024, np.random.default_rng(3))
OTHER = he_ou.keygen(1024, np.random.default_rng(4))
VALUE = st.integers(-(2**200), 2**200)


def test_the_key_has_the_promised_shape():
    pub, sec = KEY
    assert pub.key_bits == 1024 and sec.public is pub
    assert pub.max_int.bit_length() - 1 == pub.plain_bits < int(sec.p).bit_length() - 3
    assert int(sec.p) ** 2 * (pub.n // (int(sec.p) ** 2)) == pub.n  # n = p^2 q


@settings(max_examples=25, deadline=None)
@given(
    st.lists(VALUE, min_size=1, max_size=6),
    st.lists(VALUE, min_size=6, max_size=6),
    st.lists(st.integers(-(2**40), 2**40), min_size=6, max_size=6),
)
def test_encrypt_add_matvec_decrypt(values, others, weights):
    pub, sec = KEY
    k = len(values)
    a, b = he_ou.encrypt(pub, values), he_ou.encrypt(pub, others[:k])
    assert he_ou.decrypt(sec, a) == values
    assert he_ou.decrypt(sec, he.add(a, b)) == [x + y for x, y in zip(values, others)]
    assert he_ou.decrypt(sec, he_ou.add_plain(a, others[:k])) == [x + y for x, y in zip(values, others)]
    row = np.array([weights[:k]], dtype=np.int64)
    assert he_ou.decrypt(sec, he.matvec(row, a)) == [sum(int(w) * v for w, v in zip(weights, values))]
    wired = he.from_wire(pub, he.to_wire(a), k)
    assert he_ou.decrypt(sec, wired) == values
    with pytest.raises(ProtocolError, match="another public key"):
        he.from_wire(OTHER[0], he.to_wire(a), k)


@settings(max_examples=15, deadline=None)
@given(st.lists(st.integers(-(2**95), 2**95), min_size=1, max_size=9))
def test_masked_gradients_pack_and_unpack_exactly_under_ou(values):
    ops = PaillierOps(KEY[0], 16, KEY[1])
    masked, masks = ops.mask(Enc(he_ou.encrypt(KEY[0], values), 32))
    assert ops.slots >= 2 and len(masked.cv) == ops.wire_count(len(values))
    fields = ops.reveal(ops.from_wire(ops.to_wire(masked), ops.wire_count(len(values)), "g"))
    np.testing.assert_array_equal(ops.unmask(fields, masks, len(values), "g"), he.decode(values, 32))


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 2**64))
def test_the_key_holder_refuses_a_decryption_beyond_the_packed_range(extra):
    pub, sec = KEY
    ops = PaillierOps(pub, 16, sec)
    bound = 1 << (ops.slots * SLOT_BITS)
    crafted = he.CipherVector(pub, (pub.plain_factor(bound + extra),))  # what a cheating party could send
    with pytest.raises(ProtocolError, match="outside the OU key's plaintext range"):
        ops.reveal(Enc(crafted, 32))
    with pytest.raises(ProtocolError, match="exceeds the OU key's range"):
        he_ou.encrypt(pub, [pub.max_int])
    with pytest.raises(ProtocolError, match="expected fields 'n', 'g' and 'h'"):
        he_ou.public_from_wire(he.public_to_wire(he.keygen(1024, np.random.default_rng(5))[0]))
