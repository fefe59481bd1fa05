"""The server's view of one masked input is unrelated to the input: uniform in Z_{2^k}, the same
distribution for different inputs, uncorrelated with the input. The same detectors reject the
unmasked quantized input, so they can fail."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from tests.secagg.rounds import exchange_keys

from hamrah.secagg import DeterministicRandom, SecAggClient, SecAggConfig, SecAggServer
from hamrah.secagg.ring import quantize, unpack

M, N, BITS = 20_000, 3, 16


def _masked_input_of_client0(x0: np.ndarray, seed: int) -> np.ndarray:
    """Run rounds 0-2 with N clients; return client 0's masked vector as the server decodes it."""
    config = SecAggConfig(num_clients=N, vector_length=M, input_bits=BITS - 2, ring_bits=BITS)
    server = SecAggServer(config, graph_seed=seed)
    clients = [SecAggClient(u, config, randbytes=DeterministicRandom(seed * 100 + u)) for u in range(N)]
    shares = exchange_keys(server, clients)
    others = np.random.default_rng(seed).uniform(-1, 1, (N, M))
    masked = [c.masked_input(shares[c.client_id], x0 if c.client_id == 0 else others[c.client_id]) for c in clients]
    return unpack(masked[0].data, BITS, M).astype(np.int64)


def _chi2_uniform_p(values: np.ndarray, bins: int = 64) -> float:
    counts = np.bincount(values >> (BITS - 6), minlength=bins)
    return stats.chisquare(counts).pvalue


@pytest.fixture(scope="module")
def x0():
    return np.random.default_rng(123).uniform(-1, 1, M)


def test_masked_input_is_uniform_in_the_ring(x0):
    y = _masked_input_of_client0(x0, seed=1)
    assert _chi2_uniform_p(y) > 1e-3
    assert stats.kstest(y / 2**BITS, "uniform").pvalue > 1e-3
    # The detectors have power: the unmasked quantized input (14 bits in a 16-bit ring) is rejected.
    q = quantize(x0, 1.0, BITS - 2, np.dtype(np.uint16)).astype(np.int64)
    assert _chi2_uniform_p(q) < 1e-12
    assert stats.kstest(q / 2**BITS, "uniform").pvalue < 1e-12


def test_masked_inputs_of_different_inputs_are_indistinguishable():
    low = _masked_input_of_client0(np.full(M, -1.0), seed=2)
    high = _masked_input_of_client0(np.full(M, 1.0), seed=3)
    assert stats.ks_2samp(low, high).pvalue > 1e-3
    assert abs(low.mean() - high.mean()) < 4 * 2**BITS / np.sqrt(12 * M)  # ~4 standard errors of a mean


def test_masked_input_is_uncorrelated_with_the_input(x0):
    y = _masked_input_of_client0(x0, seed=4)
    r = stats.pearsonr(x0, y).statistic
    rho = stats.spearmanr(x0, y).statistic
    assert abs(r) < 4 / np.sqrt(M) and abs(rho) < 4 / np.sqrt(M)
    # Without masks the correlation is perfect, so the check can fail.
    q = quantize(x0, 1.0, BITS - 2, np.dtype(np.uint16)).astype(np.int64)
    assert stats.pearsonr(x0, q).statistic > 0.999
