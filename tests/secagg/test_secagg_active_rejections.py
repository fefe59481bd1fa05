"""Garbage share ciphertexts under the actively secure variant: rejections ride in the masked input, the
server's contributor set leaves out the clients it settles on, and the ConsistencyCheck covers that set.

A malicious server may ignore a rejection (list the rejected sender as a contributor to its rejecter: the
rejecter refuses to sign) or tell different clients different contributor sets (the signatures certify one
set); whatever it says, honest clients never reveal shares of both b_v and s_v^SK of any client v.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from tests.secagg.rounds import exchange_keys
from tests.secagg.test_secagg_active import _both_secrets_revealed, _parties, _reveals

from hamrah.core.errors import DropoutThresholdExceeded, HamrahError, ProtocolError
from hamrah.secagg import ConsistencyBroadcast, ConsistencyRequest, SecAggConfig
from hamrah.secagg.messages import SharesBroadcast
from hamrah.secagg.ring import quantize, reduce, ring_dtype


def _garble(m: SharesBroadcast, garbled) -> SharesBroadcast:
    cts = tuple((v, bytes([ct[0] ^ 1]) + ct[1:] if (v, m.client_id) in garbled else ct) for v, ct in m.ciphertexts)
    return SharesBroadcast(m.round_id, m.client_id, cts)


def _through_masked_input(config, inputs, garbled, seed=0):
    clients, server, _ = _parties(config, seed)
    shares = exchange_keys(server, clients)
    for c in clients:
        try:
            server.receive(c.masked_input(_garble(shares[c.client_id], garbled), inputs[c.client_id]).to_bytes())
        except DropoutThresholdExceeded:
            continue  # too few senders opened: the client aborts, a drop-out
    return clients, server


def test_an_honest_active_round_leaves_out_a_sender_of_garbage_and_sums_the_rest():
    n, hostile = 6, 4
    config = SecAggConfig(num_clients=n, vector_length=3, threshold=4, input_bits=8)
    xs = [np.full(3, 0.1 * u) for u in range(n)]
    clients, server = _through_masked_input(config, xs, {(hostile, r) for r in range(n) if r != hostile})
    requests = server.close_masked_input()
    assert set(requests) == set(range(n)) - {hostile}
    assert all(r.contributors == (0, 1, 2, 3, 5) for r in requests.values())
    for u, r in requests.items():
        server.receive(clients[u].consistency_check(r).to_bytes())
    broadcasts = server.close_consistency_check()
    for u, b in broadcasts.items():
        server.receive(clients[u].unmask(b).to_bytes())
    result = server.close_unmasking()
    assert result.left_out == (hostile,) and result.contributors == (0, 1, 2, 3, 5)
    dtype = ring_dtype(config.ring_bits)
    total = sum(quantize(xs[u], config.clip, config.input_bits, dtype) for u in result.contributors)
    assert result.ring_sum.tolist() == reduce(total, config.ring_bits).tolist()


def test_a_client_refuses_to_sign_a_contributor_set_holding_a_sender_it_rejected():
    """The server ignores client 0's rejection of client 1 and tells it U3 = everyone: no signature, no share."""
    n = 5
    config = SecAggConfig(num_clients=n, vector_length=3, input_bits=8)
    clients, _ = _through_masked_input(config, [np.zeros(3)] * n, {(1, 0)})
    with pytest.raises(ProtocolError, match=r"neighbours \[1\] are listed as contributors but sent it no shares"):
        clients[0].consistency_check(ConsistencyRequest(0, 0, tuple(range(n))))


@st.composite
def stories(draw):
    n = draw(st.integers(4, 8))
    neighbours = draw(st.sampled_from([None] + list(range(2, n - 1, 2))))
    config = SecAggConfig(num_clients=n, vector_length=2, neighbours=neighbours, input_bits=8)
    pairs = st.tuples(st.integers(0, n - 1), st.integers(1, n - 1)).map(lambda p: (p[0], (p[0] + p[1]) % n))
    garbled = draw(st.sets(pairs, max_size=n))
    accused = sorted({v for v, _ in garbled})

    def story():  # near the truth: a few clients called dropped, perhaps the accused left out, perhaps not
        gone = draw(st.sets(st.integers(0, n - 1), max_size=2))
        return set(range(n)) - gone - (set(accused) if draw(st.booleans()) else set())

    told = [story() | {u} for u in range(n)]
    same = draw(st.booleans())  # one story for everyone, or each client its own
    return config, garbled, [told[0] | {u} for u in range(n)] if same else told


@settings(max_examples=50, deadline=None)
@given(stories())
def test_no_story_about_rejections_makes_honest_clients_reveal_both_secrets_of_a_client(scenario):
    config, garbled, told = scenario
    n = config.num_clients
    clients, _ = _through_masked_input(config, [np.zeros(2)] * n, garbled)
    signatures = {}
    for u in range(n):
        try:
            signatures[u] = clients[u].consistency_check(ConsistencyRequest(0, u, tuple(sorted(told[u])))).signature
        except HamrahError:
            continue
    relay = tuple((v, signatures[v]) for v in sorted(signatures))
    replies = _reveals([clients[u] for u in signatures], {u: ConsistencyBroadcast(0, u, relay) for u in signatures})
    revealing = [u for u, r in replies.items() if not isinstance(r, Exception)]
    event("some clients revealed shares" if revealing else "every client aborted")
    assert _both_secrets_revealed(replies.values()) == set()
    assert len({tuple(sorted(told[u])) for u in revealing}) <= 1
    for u in revealing:  # nothing about a rejected sender: its shares never opened
        rejected = {v for v, r in garbled if r == u}
        shares = replies[u].self_mask_shares + replies[u].key_shares
        assert not rejected & {v for v, _ in shares}
