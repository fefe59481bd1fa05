"""Paillier bytes: round trips, compact size, and malformed input raising ProtocolError."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from hamrah.core.errors import ProtocolError
from hamrah.he import (
    Packing,
    decrypt_vector,
    encrypt_packed,
    encrypt_vector,
    mul_plain,
    public_key_from_bytes,
    public_key_to_bytes,
    sum_vectors,
    vector_from_bytes,
    vector_to_bytes,
)

HEADER = 4 + 46  # magic + struct header


def test_public_key_round_trip(keys):
    pub, _ = keys
    data = public_key_to_bytes(pub)
    assert len(data) == 6 + 128
    assert public_key_from_bytes(data) == pub


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: b"XXXX" + d[4:],
        lambda d: d[:-1],
        lambda d: d + b"\x00",
        lambda d: d[:6] + b"\x00" * (len(d) - 7) + b"\x02",  # even, tiny modulus
        lambda d: b"",
    ],
)
def test_malformed_public_key_raises_protocol_error(keys, mutate):
    with pytest.raises(ProtocolError, match="public key"):
        public_key_from_bytes(mutate(public_key_to_bytes(keys[0])))


def test_packed_vector_round_trip_and_size(keys):
    pub, priv = keys
    packing = Packing(1024, 16, 1.0, 4)
    x = np.random.default_rng(0).uniform(-1, 1, 200)
    total = sum_vectors([encrypt_packed(pub, x, packing)] * 2)
    data = vector_to_bytes(total)
    assert len(data) == HEADER + packing.num_plaintexts(200) * 256  # 2048-bit ciphertexts
    back = vector_from_bytes(data, public_key_from_bytes(public_key_to_bytes(pub)))
    assert back == total
    assert np.abs(decrypt_vector(priv, back) - 2 * x).max() <= 2 * 2.0**-16


def test_unpacked_vector_round_trip_keeps_the_scale(keys):
    pub, priv = keys
    a = mul_plain(encrypt_vector(pub, [0.5, -0.25]), 3.0)
    back = vector_from_bytes(vector_to_bytes(a), pub)
    assert back == a and back.scale_bits == 48
    assert np.allclose(decrypt_vector(priv, back), [1.5, -0.75])


def _patch(data: bytes, offset: int, fmt: str, value) -> bytes:
    return data[:offset] + struct.pack(fmt, value) + data[offset + struct.calcsize(fmt) :]


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: b"HPV2" + d[4:], "starting with"),
        (lambda d: d[:30], "header"),
        (lambda d: d[:-1], "bytes"),
        (lambda d: d + b"\x00" * 256, "bytes"),
        (lambda d: _patch(d, 4, ">B", 7), "bad header"),
        (lambda d: _patch(d, 23, ">I", 0), "bad header"),  # count 0
        (lambda d: _patch(d, 23, ">I", 5), "bad packing header"),  # count > max_clients
        (lambda d: _patch(d, 13, ">Q", 10_000), "expected"),  # length disagrees
        (lambda d: d[:HEADER] + b"\xff" * 256 + d[HEADER + 256 :], "outside"),  # ciphertext >= n^2
        (lambda d: d[:HEADER] + b"\x00" * 256 + d[HEADER + 256 :], "outside"),  # ciphertext 0
    ],
)
def test_malformed_vector_raises_protocol_error(keys, mutate, message):
    pub, _ = keys
    data = vector_to_bytes(encrypt_packed(pub, np.zeros(200), Packing(1024, 16, 1.0, 4)))
    with pytest.raises(ProtocolError, match=message):
        vector_from_bytes(mutate(data), pub)


def test_vector_for_another_key_is_refused(keys, other_keys):
    data = vector_to_bytes(encrypt_vector(keys[0], [1.0]))
    with pytest.raises(ProtocolError, match="different public key"):
        vector_from_bytes(data, other_keys[0])
