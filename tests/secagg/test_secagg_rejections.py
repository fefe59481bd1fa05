"""Garbage share ciphertexts (a hostile client sends shares its receivers cannot open): a receiver rejects
the sender instead of aborting, and the server leaves out clients so that no contributor rejected another.

Property: for SecAgg and SecAgg+, any drop-out pattern and any set of garbled (sender, receiver) pairs, the
round either returns bit for bit the ring sum of the contributors' inputs, where the contributors are the
clients whose masked input arrived less those left out for accusations (no contributor rejected another,
and every client in no accusation stays), or raises DropoutThresholdExceeded exactly when the documented
rule (docs/secagg.md, "A client that sends garbage shares") says too few valid holders remain; and the
server never receives shares of both secrets (b_v and s_v^SK) of any client.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from hamrah.core.errors import DropoutThresholdExceeded
from hamrah.secagg import SecAggClient, SecAggConfig, SecAggServer, masking_graph
from hamrah.secagg.crypto import DeterministicRandom
from hamrah.secagg.messages import SharesBroadcast, decode
from hamrah.secagg.rejections import accusations, left_out
from hamrah.secagg.ring import quantize, reduce, ring_dtype

M = 3
NEVER = 4


def _garble(ct: bytes) -> bytes:
    return bytes([ct[0] ^ 0x5A]) + ct[1:]


class _Round:
    """One round driven by hand through the wire form: ``leave[u]`` is the stage index u sends nothing from
    (0 advertise_keys .. 3 unmasking, 4 never); ``garbled`` the (sender, receiver) ciphertexts spoiled in
    transit. A client that aborts (DropoutThresholdExceeded) sends nothing more, as a device would."""

    def __init__(self, config: SecAggConfig, leave, garbled, seed: int):
        self.config, self.leave, self.garbled = config, leave, garbled
        n = config.num_clients
        self.server = SecAggServer(config, round_id=5, graph_seed=seed)
        self.clients = [
            SecAggClient(u, config, round_id=5, randbytes=DeterministicRandom(seed + 7 * u)) for u in range(n)
        ]
        self.b_owners: set[int] = set()
        self.s_owners: set[int] = set()

    def run(self, xs):
        steps = (
            lambda c, m: c.advertise_keys(),
            lambda c, m: c.share_keys(m),
            lambda c, m: c.masked_input(self._spoil(m), xs[c.client_id]),
            lambda c, m: c.unmask(m),
        )
        closes = ("close_advertise_keys", "close_share_keys", "close_masked_input", "close_unmasking")
        inbox = {u: None for u in range(self.config.num_clients)}
        for i, (step, close) in enumerate(zip(steps, closes)):
            for u, wire in inbox.items():
                if self.leave[u] <= i:
                    continue
                try:
                    reply = step(self.clients[u], None if wire is None else decode(wire))
                except DropoutThresholdExceeded:
                    self.leave[u] = i  # the client aborts: a drop-out from here on
                    continue
                if i == 3:
                    self.b_owners |= {v for v, _ in reply.self_mask_shares}
                    self.s_owners |= {v for v, _ in reply.key_shares}
                self.server.receive(reply.to_bytes())
            out = getattr(self.server, close)()
            if i == 3:
                return out
            inbox = {u: m.to_bytes() for u, m in out.items()}

    def _spoil(self, m: SharesBroadcast) -> SharesBroadcast:
        cts = tuple((v, _garble(ct) if (v, m.client_id) in self.garbled else ct) for v, ct in m.ciphertexts)
        return SharesBroadcast(m.round_id, m.client_id, cts)


def _expected(config: SecAggConfig, graph, leave, garbled):
    """The documented rule: the contributor set, or None when the round must abort (too few holders)."""
    t, n, full = config.threshold, config.num_clients, config.neighbours is None
    alive = [{u for u in range(n) if leave[u] > i} for i in range(4)]
    for survivors in alive[:2]:  # advertise_keys, share_keys: every survivor needs t surviving holders
        if not survivors or any(len((graph[u] | {u}) & survivors) < t for u in survivors):
            return None
    u2 = alive[1]
    sent = {u: graph[u] & u2 for u in u2}  # the senders forwarded to u
    opened = {u: {v for v in sent[u] if (v, u) not in garbled} for u in u2}
    # a client whose opened senders leave fewer than t holders aborts before its masked input
    arrived = {u for u in alive[2] if len(opened[u]) + 1 >= t}
    rejections = {u: sent[u] - opened[u] for u in arrived}
    contributors = arrived - left_out(rejections, arrived)
    needed = contributors | {v for v in u2 - contributors if any(v in opened[u] for u in contributors)}

    def holders(w, among):
        return {h for h in among if h == w or w in opened[h]}

    if not contributors or (full and len(contributors) < t):
        return None
    if not full and any(len(holders(w, contributors)) < t for w in needed):
        return None
    u4 = {u for u in contributors if leave[u] > 3 and len(opened[u] & contributors) + 1 >= t}
    if any(len(holders(w, u4)) < t for w in needed):
        return None
    return contributors, rejections, arrived


@st.composite
def scenarios(draw):
    variant = draw(st.sampled_from(["secagg", "secagg+"]))
    n = draw(st.integers(5 if variant == "secagg+" else 2, 9))
    k = draw(st.sampled_from(list(range(2, n - 1, 2)))) if variant == "secagg+" else None
    holders = n if k is None else k + 1
    t = draw(st.integers(1, holders if draw(st.booleans()) else max(1, holders // 2)))  # aborts a third of the time
    leave = draw(st.lists(st.sampled_from([0, 1, 2, 3] + [NEVER] * 10), min_size=n, max_size=n))
    pairs = st.tuples(st.integers(0, n - 1), st.integers(1, n - 1)).map(lambda p: (p[0], (p[0] + p[1]) % n))
    garbled = draw(st.sets(pairs, max_size=2 * n))
    if draw(st.booleans()):  # one sender of garbage to everyone: the defect's attack
        h = draw(st.integers(0, n - 1))
        garbled |= {(h, r) for r in range(n) if r != h}
    xs = draw(st.lists(st.lists(st.floats(-2.0, 2.0, allow_nan=False), min_size=M, max_size=M), min_size=n, max_size=n))
    config = SecAggConfig(num_clients=n, vector_length=M, neighbours=k, threshold=t, input_bits=8)
    return config, leave, garbled, [np.asarray(x) for x in xs], draw(st.integers(0, 2**16))


@settings(max_examples=150, deadline=None)
@given(scenarios())
def test_garbled_shares_cost_the_accused_never_the_round_or_the_sum(scenario):
    config, leave, garbled, xs, seed = scenario
    graph = masking_graph(range(config.num_clients), config.neighbours, seed)
    expected = _expected(config, graph, list(leave), garbled)
    run = _Round(config, list(leave), garbled, seed)
    if expected is None:
        event("aborted")
        with pytest.raises(DropoutThresholdExceeded):
            run.run(xs)
        assert not run.b_owners & run.s_owners
        return
    contributors, rejections, arrived = expected
    event("left out some" if contributors != arrived else "completed")
    result = run.run(xs)
    assert set(result.contributors) == contributors
    assert set(result.left_out) == arrived - contributors
    assert result.rejected == {u: tuple(sorted(r)) for u, r in rejections.items() if r}
    dtype = ring_dtype(config.ring_bits)
    total = np.zeros(M, dtype=dtype)
    for u in contributors:
        total += quantize(xs[u], config.clip, config.input_bits, dtype)
    assert result.ring_sum.tolist() == reduce(total, config.ring_bits).tolist()
    assert not run.b_owners & run.s_owners  # never both secrets of one client
    assert run.b_owners <= contributors and not run.s_owners & contributors
    # the contributor set is accusation-free, and a client in no accusation is never left out
    assert not accusations(rejections, contributors)
    implicated = {c for edge in accusations(rejections, arrived) for c in edge}
    assert arrived - implicated <= contributors


@given(st.integers(2, 12), st.data())
def test_one_hostile_client_costs_at_most_one_honest_client(n, data):
    """Whatever one client h does (garbage to any receivers, false accusations of any senders), every edge
    involves h; h is left out unless all its edges are with one other client, who may go in its place."""
    h = data.draw(st.integers(0, n - 1))
    others = [u for u in range(n) if u != h]
    victims = data.draw(st.sets(st.sampled_from(others)))
    accused_by_h = data.draw(st.sets(st.sampled_from(others)))
    rejections = {u: {h} for u in victims}
    rejections[h] = accused_by_h
    out = left_out(rejections, set(range(n)))
    assert len(out) <= 1
    partners = victims | accused_by_h
    if len(partners) >= 2:
        assert out == {h}
    elif partners:
        assert out <= {h} | partners and len(out) == 1


def test_one_sender_of_garbage_to_everyone_is_left_out_and_the_others_are_summed():
    """The defect: in a small federation every client is in every round; one sends garbage shares to all.
    Before, every honest receiver aborted and so did every round; now the sum is the other four's."""
    n = 5
    config = SecAggConfig(num_clients=n, vector_length=M, threshold=4, input_bits=8)
    xs = [np.full(M, 0.1 * u) for u in range(n)]
    run = _Round(config, [NEVER] * n, {(2, r) for r in range(n) if r != 2}, seed=1)
    result = run.run(xs)
    assert result.contributors == (0, 1, 3, 4) and result.left_out == (2,)
    assert result.rejected == {0: (2,), 1: (2,), 3: (2,), 4: (2,)}
    assert result.keys_rebuilt == ()  # nobody masked with client 2: nothing to rebuild
    np.testing.assert_allclose(result.sum, sum(xs[u] for u in (0, 1, 3, 4)), atol=1e-2)
