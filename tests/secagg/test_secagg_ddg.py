"""The ring arithmetic of the distributed discrete Gaussian (Kairouz, Liu, Steinke 2021): the rotation is
orthonormal and inverted exactly, conditional rounding never exceeds the bound the accountant assumes, the
discrete Gaussian sampler has the right distribution, and SecAgg sums the noisy ring vectors exactly."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from hamrah.core.errors import ConfigError, ProtocolError
from hamrah.secagg import STAGES, SecAggConfig, ddg, run_secure_aggregation

finite = st.floats(-1e6, 1e6, allow_nan=False)


@settings(max_examples=60, deadline=None)
@given(st.lists(finite, min_size=1, max_size=70), st.integers(0, 2**32))
def test_rotation_keeps_norms_and_inverts(x, seed):
    x = np.asarray(x)
    d = 1 << (len(x) - 1).bit_length()
    y = ddg.rotate(x, seed, d)
    assert math.isclose(np.linalg.norm(y), np.linalg.norm(x), rel_tol=1e-9, abs_tol=1e-9)
    np.testing.assert_allclose(ddg.unrotate(y, seed, len(x)), x, rtol=0, atol=1e-9 * (1 + np.abs(x).max()))


def test_walsh_hadamard_matches_the_matrix():
    from scipy.linalg import hadamard

    x = np.random.default_rng(0).normal(size=32)
    np.testing.assert_allclose(ddg.fwht(x), hadamard(32) @ x / math.sqrt(32), atol=1e-12)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(finite, min_size=1, max_size=60),
    st.floats(1e-3, 10.0),
    st.floats(1e-4, 1.0),
    st.sampled_from([0.0, 0.1, math.exp(-0.5), 0.9]),
    st.integers(0, 2**32),
)
def test_the_rounded_vector_never_exceeds_the_sensitivity_the_accountant_assumes(x, clip, gamma, beta, seed):
    # No noise and a ring wide enough not to wrap: what comes out is the rounded vector itself.
    params = ddg.DDGParams(len(x), clip, gamma, 0.0, ring_bits=62, beta=beta)
    z = ddg.from_ring(ddg.encode(np.asarray(x), params, seed, np.random.default_rng(seed)), 62)
    assert np.linalg.norm(z) <= params.l2_bound + 1e-9
    assert params.l2_bound <= clip / gamma + math.sqrt(params.padded_dim) + 1e-9


def test_conditional_rounding_refuses_an_impossible_bound():
    with pytest.raises(ProtocolError, match="no rounding of a vector of norm"):
        ddg.conditional_round(np.full(16, 0.5), bound=1.0, rng=np.random.default_rng(0), max_tries=20)


@pytest.mark.parametrize("sigma", [0.7, 2.5, 6.0])
def test_discrete_gaussian_has_the_discrete_gaussian_pmf(sigma):
    values = ddg.discrete_gaussian(sigma, 60_000, np.random.default_rng(1))
    support = np.arange(-int(4 * sigma) - 1, int(4 * sigma) + 2)
    pmf = np.exp(-(support**2) / (2 * sigma**2))
    full = np.exp(-(np.arange(-200, 201) ** 2) / (2 * sigma**2)).sum()
    expected = pmf / full * len(values)
    observed = np.array([(values == k).sum() for k in support])
    inside = observed.sum()
    assert stats.chisquare(observed, expected * inside / expected.sum()).pvalue > 1e-3
    # The same test rejects a rounded continuous Gaussian of a different scale.
    wrong = np.rint(np.random.default_rng(2).normal(0, sigma * 1.3, 60_000)).astype(int)
    observed = np.array([(wrong == k).sum() for k in support])
    assert stats.chisquare(observed, expected * observed.sum() / expected.sum()).pvalue < 1e-6


def test_ring_maps_are_modular_clipping():
    z = np.array([-5, -1, 0, 1, 7, -8])
    r = ddg.to_ring(z, 4)
    assert r.tolist() == [11, 15, 0, 1, 7, 8]
    assert ddg.from_ring(r, 4).tolist() == [-5, -1, 0, 1, 7, -8]
    assert ddg.from_ring(ddg.to_ring(np.array([9]), 4), 4).tolist() == [-7]  # out of range: wraps


@settings(max_examples=20, deadline=None)
@given(st.integers(3, 8), st.lists(st.integers(0, len(STAGES)), min_size=8, max_size=8), st.integers(0, 2**16))
def test_secagg_sums_noisy_ring_vectors_exactly(n, leave, seed):
    params = ddg.DDGParams(
        dim=13, clip=1.0, gamma=ddg.choose_gamma(1.0, 0.3, 16, n, 16), local_stddev=0.3, ring_bits=16
    )
    rng = np.random.default_rng(seed)
    xs = [rng.normal(size=13) for _ in range(n)]
    enc = [ddg.encode(x, params, seed, np.random.default_rng(seed + u)) for u, x in enumerate(xs)]
    # Only drop-outs after the masked input or none (before it, the threshold may abort, tested elsewhere).
    leave = [max(v, 3) for v in leave[:n]]
    config = SecAggConfig(num_clients=n, vector_length=16, ring_bits=16, prequantized=True, threshold=1)
    dropouts = {"unmasking": {u for u in range(n) if leave[u] == 3} - {0}}
    run = run_secure_aggregation(enc, config, dropouts, seed=seed)
    plain = np.sum([e.astype(np.int64) for e in enc], axis=0) % (1 << 16)
    assert run.result.ring_sum.astype(np.int64).tolist() == plain.tolist()
    total = ddg.decode_sum(run.result.ring_sum, params, seed)
    # Decoding is exact up to the rounding and the noise: within 6 std of sqrt(n) (gamma + sigma) per coordinate.
    clipped = [x * min(1.0, 1.0 / np.linalg.norm(x)) for x in xs]
    err = np.abs(total - np.sum(clipped, axis=0)).max()
    assert err < 6 * math.sqrt(n) * (params.gamma + params.local_stddev) + 1e-9


def test_prequantized_inputs_must_be_ring_elements():
    config = SecAggConfig(num_clients=3, vector_length=2, ring_bits=8, prequantized=True)
    with pytest.raises(ProtocolError, match=r"prequantized input must be integers in \[0, 2\^8\)"):
        run_secure_aggregation([np.array([1, 256]), np.array([0, 0]), np.array([0, 0])], config)
    with pytest.raises(ConfigError, match="prequantized inputs need ring_bits"):
        SecAggConfig(num_clients=3, vector_length=2, prequantized=True)


def test_choose_gamma_fits_k_stddevs_in_the_ring():
    gamma = ddg.choose_gamma(1.0, 0.5, 16, 50, 1024, k_stddevs=4)
    spread = 4 * math.sqrt(50**2 / 1024 + 50 * 0.5**2 + 50 * gamma**2 / 4) / gamma
    assert math.isclose(2 * spread, 2**16, rel_tol=1e-9)
    with pytest.raises(ConfigError, match="a 2-bit ring cannot hold 4 standard deviations"):
        ddg.choose_gamma(1.0, 0.5, 2, 50, 1024)
