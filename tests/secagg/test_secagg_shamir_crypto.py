"""Shamir sharing rebuilds from any t shares and not from fewer; the AEAD rejects tampering; the
masking graph is k-regular and symmetric; ring packing round-trips."""

from __future__ import annotations

import itertools

import gmpy2
import numpy as np
import pytest

from hamrah.core.errors import AuthError, ProtocolError
from hamrah.secagg import DeterministicRandom, crypto, masking_graph, shamir
from hamrah.secagg.ring import pack, packed_size, ring_dtype, unpack


def test_field_is_the_smallest_prime_above_2_256():
    assert gmpy2.is_prime(shamir.PRIME) and gmpy2.next_prime(2**256) == shamir.PRIME


def test_any_t_shares_rebuild_the_secret():
    rand = DeterministicRandom(0)
    secret = int.from_bytes(rand(32), "big")
    shares = shamir.split(secret, 3, [1, 2, 3, 4, 5, 6], rand)
    for subset in itertools.combinations(shares, 3):
        assert shamir.reconstruct({x: shares[x] for x in subset}, 3) == secret
    assert shamir.reconstruct(shares, 3) == secret  # more than t: still right


def test_fewer_than_t_shares_fail():
    rand = DeterministicRandom(1)
    secret = 123456789
    shares = shamir.split(secret, 4, list(range(1, 8)), rand)
    few = {x: shares[x] for x in (1, 2, 5)}
    with pytest.raises(ProtocolError, match="needs 4 shares, got 3"):
        shamir.reconstruct(few, 4)
    # Interpolating t - 1 shares as if the threshold were t - 1 gives a wrong value.
    assert shamir.reconstruct(few, 3) != secret


def test_split_refuses_bad_arguments():
    rand = DeterministicRandom(2)
    with pytest.raises(ValueError, match="secret must lie"):
        shamir.split(shamir.PRIME, 2, [1, 2], rand)
    with pytest.raises(ValueError, match="distinct and non-zero"):
        shamir.split(5, 2, [1, 1], rand)
    with pytest.raises(ValueError, match="distinct and non-zero"):
        shamir.split(5, 2, [0, 1], rand)


def test_key_agreement_is_symmetric_and_purpose_bound():
    rand = DeterministicRandom(3)
    (a_sk, a_pk), (b_sk, b_pk) = crypto.keypair(rand), crypto.keypair(rand)
    a, b = crypto.private_key(a_sk), crypto.private_key(b_sk)
    assert crypto.agree(a, b_pk, b"mask", 1) == crypto.agree(b, a_pk, b"mask", 1)
    assert crypto.agree(a, b_pk, b"mask", 1) != crypto.agree(a, b_pk, b"enc", 1)
    assert crypto.agree(a, b_pk, b"mask", 1) != crypto.agree(a, b_pk, b"mask", 2)
    with pytest.raises(ProtocolError, match="invalid X25519 public key"):
        crypto.agree(a, bytes(32), b"mask", 1)  # the all-zero point has low order


def test_tampered_or_misaddressed_ciphertexts_are_rejected():
    key = DeterministicRandom(4)(32)
    ct = crypto.seal(key, 1, 2, 0, b"shares")
    assert crypto.open_sealed(key, 1, 2, 0, ct) == b"shares"
    for i in range(len(ct)):
        bad = bytearray(ct)
        bad[i] ^= 0x01
        with pytest.raises(AuthError, match="failed authentication"):
            crypto.open_sealed(key, 1, 2, 0, bytes(bad))
    for sender, receiver, round_id in ((2, 1, 0), (1, 3, 0), (1, 2, 1)):
        with pytest.raises(AuthError):
            crypto.open_sealed(key, sender, receiver, round_id, ct)


def test_prg_is_deterministic_and_seed_dependent():
    a = crypto.prg(b"\x01" * 32, 1000, np.dtype(np.uint32))
    assert np.array_equal(a, crypto.prg(b"\x01" * 32, 1000, np.dtype(np.uint32)))
    assert not np.array_equal(a, crypto.prg(b"\x02" * 32, 1000, np.dtype(np.uint32)))


@pytest.mark.parametrize("bits", [1, 7, 8, 12, 16, 26, 32, 33, 63, 64])
def test_pack_round_trips(bits):
    values = np.frombuffer(DeterministicRandom(bits)(8 * 37), dtype=np.uint64).copy()
    values = (values & np.uint64((1 << bits) - 1) if bits < 64 else values).astype(ring_dtype(bits))
    data = pack(values, bits)
    assert len(data) == packed_size(37, bits)
    assert np.array_equal(unpack(data, bits, 37), values)
    # The layout is the plain bit stream: value i holds bits [i * bits, (i + 1) * bits), LSB first.
    stream = np.unpackbits(values.astype("<u8").view(np.uint8).reshape(37, 8), axis=1, bitorder="little")[:, :bits]
    assert data == np.packbits(stream.reshape(-1), bitorder="little").tobytes()
    with pytest.raises(ProtocolError, match="needs"):
        unpack(data + b"\0", bits, 37)


def test_secaggplus_graph_is_regular_symmetric_and_seeded():
    g = masking_graph(range(50), 8, seed=1)
    assert all(len(nb) == 8 and u not in nb for u, nb in g.items())
    assert all(u in g[v] for u, nb in g.items() for v in nb)
    assert g != masking_graph(range(50), 8, seed=2)
    assert masking_graph(range(4), None, seed=0)[2] == {0, 1, 3}
