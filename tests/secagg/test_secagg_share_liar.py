"""A holder that lies at unmasking (a hostile device with a valid token sends wrong Shamir shares): the
server checks each rebuilt secret against two further shares, locates the one liar, leaves out all its
shares and rebuilds from the honest ones. Property: with at least t + 2 holders of every secret, the
result is exactly the ring sum of the inputs, only the liar is ever named, and it is named whenever a
share it changed was among those used or checked; with t + 1 holders a lie is refused, never summed."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.secagg.rounds import exchange_keys

from hamrah.core.errors import ProtocolError
from hamrah.secagg import SecAggClient, SecAggConfig, SecAggServer, shamir
from hamrah.secagg.crypto import DeterministicRandom
from hamrah.secagg.messages import UnmaskShares
from hamrah.secagg.ring import quantize, reduce, ring_dtype

M = 4


def _round(config: SecAggConfig, xs, tamper, seed: int = 0):
    """Run one round with no drop-outs; ``tamper(u, UnmaskShares) -> UnmaskShares`` at unmasking."""
    n = config.num_clients
    server = SecAggServer(config, round_id=3, graph_seed=seed)
    clients = [SecAggClient(u, config, round_id=3, randbytes=DeterministicRandom(seed * 100 + u)) for u in range(n)]
    shares = exchange_keys(server, clients)
    for c in clients:
        server.receive(c.masked_input(shares[c.client_id], xs[c.client_id]).to_bytes())
    request = server.close_masked_input()
    for c in clients:
        server.receive(tamper(c.client_id, c.unmask(request[c.client_id])).to_bytes())
    return server, server.close_unmasking()


def _expected(config: SecAggConfig, xs) -> list[int]:
    dtype = ring_dtype(config.ring_bits)
    total = np.zeros(M, dtype=dtype)
    for x in xs:
        total += quantize(np.asarray(x), config.clip, config.input_bits, dtype)
    return reduce(total, config.ring_bits).tolist()


def _lie(liar: int, owners: set[int], offset: int):
    def tamper(u: int, m: UnmaskShares) -> UnmaskShares:
        if u != liar:
            return m
        wrong = tuple((v, (s + offset) % shamir.PRIME if v in owners else s) for v, s in m.self_mask_shares)
        return UnmaskShares(m.round_id, m.client_id, wrong, m.key_shares)

    return tamper


@st.composite
def scenarios(draw):
    variant = draw(st.sampled_from(["secagg", "secagg+"]))
    n = draw(st.integers(4 if variant == "secagg" else 6, 9))
    k = draw(st.sampled_from(list(range(4, n - 1, 2)))) if variant == "secagg+" else None
    holders = n if k is None else k + 1
    t = draw(st.integers(1, holders - 2))  # every secret has t + 2 holders: no one drops out
    config = SecAggConfig(num_clients=n, vector_length=M, neighbours=k, threshold=t, input_bits=8)
    xs = draw(st.lists(st.lists(st.floats(-2.0, 2.0, allow_nan=False), min_size=M, max_size=M), min_size=n, max_size=n))
    liar = draw(st.integers(0, n - 1))
    owners = set(draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=n)))
    offset = draw(st.integers(1, shamir.PRIME - 1))
    return config, [np.asarray(x) for x in xs], liar, owners, offset, draw(st.integers(0, 2**16))


@settings(max_examples=40, deadline=None)
@given(scenarios())
def test_one_lying_holder_is_located_and_the_sum_stays_exact(scenario):
    config, xs, liar, owners, offset, seed = scenario
    server, result = _round(config, xs, _lie(liar, owners, offset), seed)
    assert result.ring_sum.tolist() == _expected(config, xs)
    assert set(server.share_liars) <= {liar}  # an honest holder is never named
    # the liar's changed shares that were used or checked: those of owners where it is among the first t + 2
    # holders (the owner and its neighbours; all of them survived)
    seen = [
        u
        for u in owners & set(server.graph[liar] | {liar})
        if sorted(server.graph[u] | {u}).index(liar) < config.threshold + 2
    ]
    assert (liar in server.share_liars) == bool(seen)


def test_with_t_plus_1_holders_a_wrong_share_is_refused_not_summed():
    config = SecAggConfig(num_clients=4, vector_length=M, threshold=3, input_bits=8)
    xs = [np.full(M, 0.25 * u) for u in range(4)]
    with pytest.raises(ProtocolError, match="do not lie on one polynomial"):
        _round(config, xs, _lie(0, {1}, 5))
    server, result = _round(config, xs, lambda u, m: m)  # honest: exact, nobody named
    assert result.ring_sum.tolist() == _expected(config, xs) and server.share_liars == {}


def test_the_lying_holder_is_named_with_what_it_did():
    config = SecAggConfig(num_clients=6, vector_length=M, threshold=3, input_bits=8)
    xs = [np.full(M, 0.1 * u) for u in range(6)]
    server, result = _round(config, xs, _lie(1, {0, 2, 5}, 1))
    assert result.ring_sum.tolist() == _expected(config, xs)
    assert list(server.share_liars) == [1] and "self-mask seed b_u" in server.share_liars[1]
