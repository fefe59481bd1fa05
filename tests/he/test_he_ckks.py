"""CKKS: sums within the documented error, a server context that cannot decrypt, bytes round trips."""

from __future__ import annotations

import numpy as np
import pytest
import tenseal as ts
from hypothesis import given, settings
from hypothesis import strategies as st

from hamrah.core.errors import ConfigError, ProtocolError
from hamrah.he import CKKSConfig, CKKSScheme

# N = 4096 keeps the tests fast; 2048 slots per ciphertext.
CONFIG = CKKSConfig(poly_modulus_degree=4096, coeff_mod_bit_sizes=(40, 40), scale_bits=25, bound=1.0, max_clients=8)


@pytest.fixture(scope="module")
def scheme_keys():
    scheme = CKKSScheme(CONFIG)
    return scheme, scheme.keygen()


def test_sum_is_within_the_documented_error(scheme_keys):
    scheme, keys = scheme_keys
    rng = np.random.default_rng(0)
    xs = [rng.uniform(-1, 1, 5000) for _ in range(4)]  # three ciphertexts, the last one partial
    total = scheme.sum([scheme.encrypt(keys.public, x) for x in xs])
    assert len(total.vectors) == scheme.num_ciphertexts(5000) == 3 and total.count == 4
    err = np.abs(scheme.decrypt_sum(keys.secret, total) - np.sum(xs, axis=0)).max()
    assert err <= CONFIG.error_bound(4)
    assert err > 0  # approximate, unlike Paillier


@settings(max_examples=20, deadline=None)
@given(
    st.tuples(st.integers(1, 6), st.integers(1, 300)).flatmap(
        lambda nk: st.lists(
            st.lists(st.floats(-1.0, 1.0), min_size=nk[1], max_size=nk[1]).map(np.array),
            min_size=nk[0],
            max_size=nk[0],
        )
    )
)
def test_any_sum_of_bounded_vectors_decrypts_within_the_bound(xs):
    scheme = CKKSScheme(CONFIG)
    keys = scheme.keygen()  # fresh keys every example: SEAL's noise differs with them
    total = scheme.sum([scheme.encrypt(keys.public, x) for x in xs])
    assert np.abs(scheme.decrypt_sum(keys.secret, total) - np.sum(xs, axis=0)).max() <= CONFIG.error_bound(len(xs))


def test_server_side_context_holds_no_secret_key_and_cannot_decrypt(scheme_keys):
    scheme, keys = scheme_keys
    server_ctx = scheme.public_from_bytes(scheme.public_to_bytes(keys.public))
    assert not server_ctx.is_private() and keys.secret.is_private()
    c = scheme.ciphertext_from_bytes(server_ctx, scheme.ciphertext_to_bytes(scheme.encrypt(keys.public, [0.5])))
    total = scheme.add(c, c)
    with pytest.raises(ValueError, match="secret_key"):
        total.vectors[0].decrypt()  # TenSEAL itself refuses
    with pytest.raises(ProtocolError, match="no secret key"):
        scheme.decrypt_sum(server_ctx, total)
    assert abs(scheme.decrypt_sum(keys.secret, total)[0] - 1.0) <= CONFIG.error_bound(2)


def test_public_bytes_with_a_secret_key_are_refused(scheme_keys):
    scheme, keys = scheme_keys
    with pytest.raises(ProtocolError, match="expected no secret key"):
        scheme.public_from_bytes(keys.secret.serialize(save_secret_key=True))
    with pytest.raises(ProtocolError, match="cannot parse"):
        scheme.public_from_bytes(b"not a context")


def test_ciphertext_round_trip(scheme_keys):
    scheme, keys = scheme_keys
    x = np.linspace(-1, 1, 3000)
    c = scheme.add(scheme.encrypt(keys.public, x), scheme.encrypt(keys.public, x))
    back = scheme.ciphertext_from_bytes(keys.public, scheme.ciphertext_to_bytes(c))
    assert (back.length, back.count) == (3000, 2)
    assert np.abs(scheme.decrypt_sum(keys.secret, back) - 2 * x).max() <= CONFIG.error_bound(2)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: b"XXXX" + d[4:], "starting with"),
        (lambda d: d[:10], "starting with"),
        (lambda d: d[:-5], "cannot be parsed|truncated"),
        (lambda d: d + b"\x00", "left over"),
        (lambda d: d[:4] + (3000).to_bytes(8, "big") + d[12:], "do not fit"),  # length says 2 ciphertexts
        (lambda d: d[:12] + (0).to_bytes(4, "big") + d[16:], "do not fit"),  # count 0
        (lambda d: d[:60] + b"\x00" * 64 + d[124:], "cannot be parsed"),
    ],
)
def test_malformed_ciphertext_raises_protocol_error(scheme_keys, mutate, message):
    scheme, keys = scheme_keys
    data = scheme.ciphertext_to_bytes(scheme.encrypt(keys.public, np.zeros(100)))
    with pytest.raises(ProtocolError, match=message):
        scheme.ciphertext_from_bytes(keys.public, mutate(data))


def test_values_beyond_the_bound_and_sums_beyond_max_clients_are_refused(scheme_keys):
    scheme, keys = scheme_keys
    with pytest.raises(ProtocolError, match="exceeds the CKKS bound"):
        scheme.encrypt(keys.public, [0.0, 2.0])
    c = scheme.encrypt(keys.public, [0.5])
    total = scheme.sum([c] * 8)
    with pytest.raises(ConfigError, match="max_clients=8"):
        scheme.add(total, c)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"poly_modulus_degree": 2048}, "poly_modulus_degree"),
        ({"poly_modulus_degree": 4096, "coeff_mod_bit_sizes": (60, 60)}, "128-bit security"),
        ({"coeff_mod_bit_sizes": (60,)}, ">= 2 primes"),
        ({"scale_bits": 50, "max_clients": 1000}, "2\\^9"),  # 60 - 1 - 50 = 9 bits of room < log2(1000)
    ],
)
def test_bad_parameters_are_config_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        CKKSConfig(**kwargs)


def test_default_parameters_are_accepted_by_seal():
    cfg = CKKSConfig()
    ctx = ts.context(
        ts.SCHEME_TYPE.CKKS,
        poly_modulus_degree=cfg.poly_modulus_degree,
        coeff_mod_bit_sizes=list(cfg.coeff_mod_bit_sizes),
    )
    assert cfg.slots == 4096 and ctx.is_private()
