"""hamrah.vertical.he: the vertical-FL Paillier backend agrees with plain integer arithmetic."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hamrah.core.errors import ConfigError, ProtocolError
from hamrah.vertical import he

# 1024-bit keys are a test-only choice (speed); docs and benchmarks use 2048.
PUB, SEC = he.keygen(1024, np.random.default_rng(1))
OTHER_PUB, OTHER_SEC = he.keygen(1024, np.random.default_rng(2))
ints = st.lists(st.integers(-(2**60), 2**60), min_size=1, max_size=6)


@settings(max_examples=15, deadline=None)
@given(ints, st.integers(0, 2**32))
def test_encrypt_add_decrypt_match_integers(xs, seed):
    rng = np.random.default_rng(seed)
    a = he.encrypt(PUB, xs, rng)
    b = he.encrypt(PUB, xs[::-1], rng)
    assert he.decrypt(SEC, a) == xs
    assert he.decrypt(SEC, he.add(a, b)) == [x + y for x, y in zip(xs, xs[::-1])]
    assert he.decrypt(SEC, he.add_plain(a, xs)) == [2 * x for x in xs]
    assert he.decrypt(SEC, he.sum_all(a)) == [sum(xs)]


@settings(max_examples=15, deadline=None)
@given(st.data())
def test_mul_plain_and_matvec_match_integers(data):
    xs = data.draw(st.lists(st.integers(-(2**40), 2**40), min_size=1, max_size=5))
    rows = data.draw(st.integers(1, 3))
    m = np.array(
        data.draw(
            st.lists(
                st.lists(st.integers(-(2**30), 2**30), min_size=len(xs), max_size=len(xs)), min_size=rows, max_size=rows
            )
        ),
        dtype=np.int64,
    )
    a = he.encrypt(PUB, xs, np.random.default_rng(0))
    assert he.decrypt(SEC, he.mul_plain(a, m[0].tolist())) == [int(x) * int(k) for x, k in zip(xs, m[0])]
    assert he.decrypt(SEC, he.matvec(m, a)) == [sum(int(k) * x for k, x in zip(row, xs)) for row in m]


@settings(max_examples=10, deadline=None)
@given(ints)
def test_wire_round_trip_and_checks(xs):
    a = he.encrypt(PUB, xs, np.random.default_rng(3))
    fields = he.to_wire(a)
    assert he.decrypt(SEC, he.from_wire(PUB, fields, len(xs))) == xs
    with pytest.raises(ProtocolError, match="expected 7 ciphertexts"):
        he.from_wire(PUB, fields, 7)
    with pytest.raises(ProtocolError, match="another public key"):
        he.from_wire(OTHER_PUB, fields, len(xs))
    bad = dict(fields, ct=(0,) + fields["ct"][1:])
    with pytest.raises(ProtocolError, match=r"\[0\]: not a ciphertext"):
        he.from_wire(PUB, bad, len(xs))


def test_wrong_key_and_overflow_are_refused():
    a = he.encrypt(PUB, [1, 2])
    with pytest.raises(ProtocolError, match="another public key"):
        he.decrypt(OTHER_SEC, a)
    with pytest.raises(ProtocolError, match="different public keys"):
        he.add(a, he.encrypt(OTHER_PUB, [1, 2]))
    with pytest.raises(ProtocolError, match="exceeds the key's range"):
        he.encrypt(PUB, [PUB.n])
    with pytest.raises(ProtocolError, match="overflowed"):
        he.decrypt(SEC, he.mul_plain(he.encrypt(PUB, [PUB.max_int]), 2))
    with pytest.raises(ConfigError, match="key_bits"):
        he.check_key_bits(512)


def test_public_key_round_trip_and_refusals():
    again = he.public_from_wire(he.public_to_wire(PUB))
    assert again.fingerprint == PUB.fingerprint
    with pytest.raises(ProtocolError, match="at least 1024 bits"):
        he.public_from_wire({"n": (2**511 + 1,), "hs": (5,)})
    with pytest.raises(ProtocolError, match="expected fields"):
        he.public_from_wire({"n": (PUB.n,)})
