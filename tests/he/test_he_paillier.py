"""Paillier vectors: exact fixed-point sums, plaintext operations, packed sums at the headroom limit."""

from __future__ import annotations

import numpy as np
import pytest

from hamrah.core.errors import ConfigError, ProtocolError
from hamrah.he import (
    FixedPoint,
    Packing,
    add,
    add_plain,
    decrypt_ints,
    decrypt_vector,
    dot_plain,
    encrypt_packed,
    encrypt_vector,
    matvec_plain,
    mul_plain,
    paillier_keygen,
    sum_vectors,
)


def test_seeded_keygen_is_reproducible_and_sized(keys):
    pub, priv = keys
    assert pub.n.bit_length() == 1024
    assert paillier_keygen(1024, np.random.default_rng(1234))[0].n == pub.n
    assert paillier_keygen(512, np.random.default_rng(1))[0].n != paillier_keygen(512, np.random.default_rng(2))[0].n
    assert priv.p * priv.q == pub.n


@pytest.mark.parametrize("bits", [256, 1023, "2048"])
def test_keygen_refuses_small_or_odd_sizes(bits):
    with pytest.raises(ConfigError, match="key_bits"):
        paillier_keygen(bits)


def test_unpacked_sum_is_the_exact_fixed_point_sum(keys):
    pub, priv = keys
    rng = np.random.default_rng(0)
    xs = [rng.normal(0, 3, 8) for _ in range(4)]
    total = sum_vectors([encrypt_vector(pub, x, 20, rng) for x in xs])
    assert decrypt_ints(priv, total) == np.sum([FixedPoint(20).encode(x) for x in xs], axis=0).tolist()
    assert np.abs(decrypt_vector(priv, total) - np.sum(xs, axis=0)).max() <= 4 * 2.0**-20


def test_encryption_is_randomised_but_seedable(keys):
    pub, _ = keys
    a = encrypt_vector(pub, [1.0], rng=np.random.default_rng(5))
    assert a == encrypt_vector(pub, [1.0], rng=np.random.default_rng(5))
    assert a.ciphertexts != encrypt_vector(pub, [1.0], rng=np.random.default_rng(6)).ciphertexts
    assert a.ciphertexts != encrypt_vector(pub, [1.0]).ciphertexts  # OS randomness


def test_plaintext_operations_for_encrypted_gradients(keys):
    pub, priv = keys
    rng = np.random.default_rng(1)
    x, w, b = rng.normal(size=6), rng.normal(size=6), rng.normal(size=6)
    a = encrypt_vector(pub, x, 24, rng)
    scaled = mul_plain(a, -2.5)
    assert scaled.scale_bits == 48
    assert np.allclose(decrypt_vector(priv, scaled), -2.5 * x, atol=1e-6)
    assert np.allclose(decrypt_vector(priv, add_plain(mul_plain(a, w), b)), x * w + b, atol=1e-6)
    assert np.allclose(decrypt_vector(priv, dot_plain(a, w)), [x @ w], atol=1e-6)
    m = rng.normal(size=(3, 6))
    assert np.allclose(decrypt_vector(priv, matvec_plain(m, a)), m @ x, atol=1e-6)


def test_plaintext_operations_check_shapes_and_refuse_packed(keys):
    pub, _ = keys
    a = encrypt_vector(pub, [1.0, 2.0])
    with pytest.raises(ProtocolError, match="scalar or 2 values"):
        mul_plain(a, [1.0, 2.0, 3.0])
    with pytest.raises(ProtocolError, match=r"shape \(rows, 2\)"):
        matvec_plain(np.ones((2, 3)), a)
    packed = encrypt_packed(pub, [0.5], Packing(1024, 16, 1.0, 4))
    with pytest.raises(ProtocolError, match="packed"):
        mul_plain(packed, 2.0)


def test_packed_encrypted_sum_at_the_headroom_limit_and_refusal_beyond(keys):
    pub, priv = keys
    packing = Packing(key_bits=1024, precision_bits=16, bound=1.0, max_clients=3)  # 3 * 2^17 fills 19 bits
    assert packing.slot_bits == 19
    rng = np.random.default_rng(2)
    xs = [np.ones(120), rng.uniform(-1, 1, 120), np.ones(120)]
    cts = [encrypt_packed(pub, x, packing, rng) for x in xs]
    assert len(cts[0].ciphertexts) == packing.num_plaintexts(120) == 3  # 53 slots per ciphertext
    total = sum_vectors(cts)
    assert total.count == 3
    assert decrypt_ints(priv, total) == np.sum([FixedPoint(16).encode(x) for x in xs], axis=0).tolist()
    assert np.abs(decrypt_vector(priv, total) - np.sum(xs, axis=0)).max() <= 3 * 2.0**-16
    with pytest.raises(ConfigError, match="a sum of 4 vectors would overflow"):
        add(total, cts[0])


def test_packed_vector_needs_a_large_enough_key(keys):
    pub, _ = keys
    with pytest.raises(ConfigError, match="2048-bit key"):
        encrypt_packed(pub, [0.0], Packing(key_bits=2048))


def test_add_refuses_mismatched_vectors(keys, other_keys):
    pub, _ = keys
    a = encrypt_vector(pub, [1.0, 2.0])
    with pytest.raises(ProtocolError, match="different public keys"):
        add(a, encrypt_vector(other_keys[0], [1.0, 2.0]))
    with pytest.raises(ProtocolError, match="length differs"):
        add(a, encrypt_vector(pub, [1.0]))
    with pytest.raises(ProtocolError, match="scale_bits differs"):
        add(a, encrypt_vector(pub, [1.0, 2.0], precision_bits=8))
    with pytest.raises(ProtocolError, match="at least one"):
        sum_vectors([])


def test_only_the_matching_private_key_decrypts(keys, other_keys):
    pub, _ = keys
    with pytest.raises(ProtocolError, match="does not belong"):
        decrypt_vector(other_keys[1], encrypt_vector(pub, [1.0]))


def test_the_public_key_holds_no_secret(keys):
    pub, priv = keys
    assert set(vars(pub)) == {"g", "n", "nsquare", "max_int"}
    assert priv.p not in vars(pub).values() and priv.q not in vars(pub).values()
