"""Secure aggregation against a malicious server (Bonawitz et al. 2017, actively secure variant).

The server below lies: it substitutes keys, forges signatures, tells different clients different sets of
contributors, or claims a client dropped although its masked input arrived. Honest clients must abort (a
HamrahError, nothing revealed) or reveal shares that cannot unmask any single input: for no client v do
honest clients reveal both a share of its self-mask seed b_v and a share of its mask key s_v^SK. The same
lies against the semi-honest protocol do unmask an input (tested), so the detector can fail.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from tests.secagg.rounds import exchange_keys

from hamrah.core.errors import AuthError, ConfigError, DropoutThresholdExceeded, HamrahError, ProtocolError
from hamrah.secagg import (
    ACTIVE_STAGES,
    ActiveSecAggClient,
    ActiveSecAggServer,
    ConsistencyBroadcast,
    ConsistencyRequest,
    DeterministicRandom,
    SecAggClient,
    SecAggConfig,
    SecAggServer,
    SignedKeysBroadcast,
    SignedPeerKeys,
    UnmaskRequest,
    crypto,
    identity_public_key,
    random_dropouts,
    run_secure_aggregation,
    simulated_identities,
)
from hamrah.secagg.active import resolve_consistency_threshold
from hamrah.secagg.ring import quantize, reduce, ring_dtype, unpack

M = 5


def _inputs(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.uniform(-1, 1, M) for _ in range(n)]


def _parties(config: SecAggConfig, seed: int = 0):
    ids = simulated_identities(config.num_clients, seed)
    public = {u: identity_public_key(k) for u, k in ids.items()}
    clients = [
        ActiveSecAggClient(
            u, config, signing_key=ids[u], verify_keys=public, randbytes=DeterministicRandom(seed * 1000 + u)
        )
        for u in range(config.num_clients)
    ]
    server = ActiveSecAggServer(config, verify_keys=public, graph_seed=seed)
    return clients, server, public


def _through_masked_input(config, inputs, seed=0, skip_input=()):
    """Run the honest rounds 0-2; return clients, server, the server's messages for the consistency check."""
    clients, server, public = _parties(config, seed)
    shares = exchange_keys(server, clients)
    masked = {}
    for c in clients:
        y = c.masked_input(shares[c.client_id], inputs[c.client_id])
        if c.client_id not in skip_input:
            server.receive(y.to_bytes())
        masked[c.client_id] = y
    try:
        requests = server.close_masked_input()
    except DropoutThresholdExceeded:
        requests = None  # an honest server would stop here; the lying servers below go on
    return clients, server, masked, requests


def _reveals(clients, broadcasts):
    """Give each client its (possibly forged) broadcast; return {client: UnmaskShares or the error it raised}."""
    out = {}
    for c in clients:
        if c.client_id not in broadcasts:
            continue
        try:
            out[c.client_id] = c.unmask(broadcasts[c.client_id])
        except HamrahError as exc:
            out[c.client_id] = exc
    return out


def _both_secrets_revealed(replies) -> set[int]:
    """Clients v for which honest clients revealed a share of b_v and a share of s_v^SK."""
    b = {v for r in replies if not isinstance(r, Exception) for v, _ in r.self_mask_shares}
    s = {v for r in replies if not isinstance(r, Exception) for v, _ in r.key_shares}
    return b & s


# -- the honest protocol ---------------------------------------------------------------------------------


@pytest.mark.parametrize("neighbours,threshold", [(None, None), (4, 3)])
def test_honest_active_round_gives_the_sum_under_dropouts_at_every_stage(neighbours, threshold):
    n = 12
    config = SecAggConfig(num_clients=n, vector_length=M, neighbours=neighbours, threshold=threshold)
    inputs = _inputs(n, 1)
    drops = {"masked_input": {3}, "consistency_check": {5}, "unmasking": {7}}
    run = run_secure_aggregation(inputs, config, drops, seed=2, identities=simulated_identities(n, 0))
    # 5 signed nothing and 7 revealed nothing, but both sent their masked inputs: both are in the sum.
    assert run.result.contributors == tuple(u for u in range(n) if u != 3)
    assert run.result.survivors["consistency_check"] == tuple(u for u in range(n) if u not in (3, 5))
    plain = np.sum([inputs[u] for u in run.result.contributors], axis=0)
    np.testing.assert_allclose(run.sum, plain, atol=n * config.step / 2 + 1e-9)


def test_active_round_costs_the_signatures_on_the_wire():
    n = 4
    config = SecAggConfig(num_clients=n, vector_length=M)
    plain = run_secure_aggregation(_inputs(n), config, seed=0)
    active = run_secure_aggregation(_inputs(n), config, seed=0, identities=simulated_identities(n, 0))
    header, sig = 16, 64
    # Sent: a signature on the keys, then a consistency message (header + signature).
    assert (active.client_bytes_sent - plain.client_bytes_sent).tolist() == [sig + header + sig] * n
    # Received: a signature per neighbour on the keys, U3 (4 + 4n), the n signatures (4 + n (4 + 64)),
    # and no UnmaskRequest (4 + 4n) any more.
    extra = (n - 1) * sig + (header + 4 + 4 * n) + (header + 4 + n * (4 + sig)) - (header + 4 + 4 * n)
    assert (active.client_bytes_received - plain.client_bytes_received).tolist() == [extra] * n


def test_too_few_signers_abort_the_consistency_check():
    config = SecAggConfig(num_clients=8, vector_length=M)  # T = max(t, 5) = 5
    with pytest.raises(DropoutThresholdExceeded, match=r"'consistency_check': 4 of 8 .* consistency threshold is T=5"):
        run_secure_aggregation(
            _inputs(8), config, {"consistency_check": {0, 1, 2, 3}}, identities=simulated_identities(8, 0)
        )


def test_consistency_threshold_must_be_a_majority():
    config = SecAggConfig(num_clients=10, vector_length=M, threshold=2)
    assert resolve_consistency_threshold(config) == 6
    with pytest.raises(ConfigError, match=r"consistency_threshold must be an integer in \[6, 10\]"):
        resolve_consistency_threshold(config, 5)


def test_missing_identity_is_refused():
    config = SecAggConfig(num_clients=3, vector_length=M)
    public = {u: identity_public_key(k) for u, k in simulated_identities(2, 0).items()}
    with pytest.raises(ConfigError, match=r"clients \[2\] of the round have no registered identity key"):
        ActiveSecAggServer(config, verify_keys=public)
    with pytest.raises(ConfigError, match="one signing key for each client"):
        run_secure_aggregation(_inputs(3), config, identities=simulated_identities(2, 0))


# -- lies about keys -------------------------------------------------------------------------------------


def test_substituted_mask_key_is_caught_before_any_share_is_sent():
    config = SecAggConfig(num_clients=4, vector_length=M)
    clients, server, _ = _parties(config)
    for c in clients:
        server.receive(c.advertise_keys())
    keys = server.close_advertise_keys()
    # The server puts its own X25519 key in place of client 1's mask key, keeping 1's signature.
    _, own_public = crypto.keypair(DeterministicRandom(99))
    forged = tuple(
        SignedPeerKeys(p.client_id, p.c_public, own_public if p.client_id == 1 else p.s_public, p.signature)
        for p in keys[0].peers
    )
    with pytest.raises(
        AuthError,
        match=r"client 0 aborts at stage 'share_keys': client 1's signature over its "
        r"advertised keys does not verify",
    ):
        clients[0].share_keys(SignedKeysBroadcast(0, 0, forged))


def test_server_refuses_an_unsigned_or_forged_advertisement():
    config = SecAggConfig(num_clients=3, vector_length=M)
    clients, server, _ = _parties(config)
    m = clients[0].advertise_keys()
    from dataclasses import replace

    with pytest.raises(AuthError, match="client 0's signature over its advertised keys does not verify"):
        server.receive(replace(m, signature=bytes(64)))
    from hamrah.secagg import AdvertiseKeys

    with pytest.raises(ProtocolError, match="got AdvertiseKeys .* expected SignedAdvertiseKeys"):
        server.receive(AdvertiseKeys(0, 1, m.c_public, m.s_public))


# -- lies about who dropped ------------------------------------------------------------------------------


def test_forged_signatures_do_not_count():
    config = SecAggConfig(num_clients=6, vector_length=M)
    clients, server, _, requests = _through_masked_input(config, _inputs(6))
    signatures = {c.client_id: c.consistency_check(requests[c.client_id]).signature for c in clients[:2]}
    # Two real signatures and four made up by the server (which holds no identity keys).
    padded = tuple(sorted({**signatures, **{v: bytes([v]) * 64 for v in range(2, 6)}}.items()))
    with pytest.raises(AuthError, match="client 2's signature over its contributor set does not verify"):
        clients[0].unmask(ConsistencyBroadcast(0, 0, padded))


def test_different_dropout_stories_to_two_groups_make_every_honest_client_abort():
    n, victim = 8, 7  # T = 5
    config = SecAggConfig(num_clients=n, vector_length=M)
    clients, server, _, _ = _through_masked_input(config, _inputs(n))
    everyone = tuple(range(n))
    story = {u: everyone if u in (0, 1, 2, victim) else tuple(v for v in everyone if v != victim) for u in range(n)}
    signed = {u: clients[u].consistency_check(ConsistencyRequest(0, u, story[u])) for u in range(n)}
    for relay in ("own group", "everyone"):
        clients2, server2, _, _ = _through_masked_input(config, _inputs(n))
        for u in range(n):
            clients2[u].consistency_check(ConsistencyRequest(0, u, story[u]))
        sigs = {
            u: tuple((v, signed[v].signature) for v in range(n) if relay == "everyone" or story[v] == story[u])
            for u in range(n)
        }
        replies = _reveals(clients2, {u: ConsistencyBroadcast(0, u, sigs[u]) for u in range(n)})
        assert all(isinstance(r, (AuthError, DropoutThresholdExceeded, ProtocolError)) for r in replies.values()), relay


def test_claiming_a_contributor_dropped_reveals_its_mask_key_but_never_its_self_mask():
    n, victim = 8, 5
    config = SecAggConfig(num_clients=n, vector_length=M)
    inputs = _inputs(n, 3)
    clients, server, masked, _ = _through_masked_input(config, inputs)
    story = tuple(v for v in range(n) if v != victim)  # the victim's masked input arrived; the server hides it
    honest = [c for c in clients if c.client_id != victim]
    sigs = tuple(
        (c.client_id, c.consistency_check(ConsistencyRequest(0, c.client_id, story)).signature) for c in honest
    )
    replies = _reveals(honest, {c.client_id: ConsistencyBroadcast(0, c.client_id, sigs) for c in honest})
    assert not any(isinstance(r, Exception) for r in replies.values())  # a consistent story is accepted
    key_holders = [u for u, r in replies.items() if victim in dict(r.key_shares)]
    assert len(key_holders) >= config.threshold  # the server does rebuild s_victim^SK ...
    assert _both_secrets_revealed(replies.values()) == set()  # ... but gets no share of b_victim
    # With s_victim^SK the server strips the pairwise masks; the self-mask PRG(b_victim) still hides the input.
    y = _strip_pairwise_masks(clients, masked[victim], victim, config)
    q = quantize(inputs[victim], config.clip, config.input_bits, y.dtype)
    assert np.count_nonzero(y == q) == 0


def _strip_pairwise_masks(clients, masked, u, config):
    dtype = ring_dtype(config.ring_bits)
    y = unpack(masked.data, config.ring_bits, config.vector_length)
    s_key = clients[u]._s_key  # what the server rebuilt from the revealed shares
    for v, peer in clients[u]._peers.items():
        p = crypto.prg(crypto.agree(s_key, peer.s_public, b"mask", 0), config.vector_length, dtype)
        y = y - p if u > v else y + p
    return reduce(y, config.ring_bits)


def test_the_same_lie_unmasks_an_input_under_the_semi_honest_protocol():
    # The detector above can fail: without the consistency check, two groups told different survivor
    # sets reveal b_v to the server through one and s_v^SK through the other.
    n, victim = 8, 7
    config = SecAggConfig(num_clients=n, vector_length=M, threshold=3)
    inputs = _inputs(n, 4)
    server = SecAggServer(config)
    clients = [SecAggClient(u, config, randbytes=DeterministicRandom(u)) for u in range(n)]
    for c in clients:
        server.receive(c.advertise_keys())
    keys = server.close_advertise_keys()
    for c in clients:
        server.receive(c.share_keys(keys[c.client_id]))
    shares = server.close_share_keys()
    for c in clients:
        c.masked_input(shares[c.client_id], inputs[c.client_id])
    everyone = tuple(range(n))
    replies = [
        c.unmask(
            UnmaskRequest(0, c.client_id, everyone if c.client_id < 4 else tuple(v for v in everyone if v != victim))
        )
        for c in clients[:-1]
    ]
    assert _both_secrets_revealed(replies) == {victim}


@st.composite
def lies(draw):
    n = draw(st.integers(4, 9))
    neighbours = draw(st.sampled_from([None] + list(range(2, n - 1, 2))))
    config = SecAggConfig(num_clients=n, vector_length=2, neighbours=neighbours, input_bits=8)
    late = draw(st.sets(st.integers(0, n - 1), max_size=n // 3))  # clients whose masked input never arrived
    truth = tuple(u for u in range(n) if u not in late)
    # Stories near the truth: some contributors called dropped, some late clients called contributors.
    stories = [
        (frozenset(truth) - draw(st.sets(st.sampled_from(truth), max_size=2)))
        | draw(st.sets(st.sampled_from(sorted(late)), max_size=2) if late else st.just(set()))
        for _ in range(draw(st.integers(1, 3)))
    ]
    # Each client is told one of the stories (with itself added, else it refuses at once) or the truth (-1).
    told = draw(st.lists(st.sampled_from([-1, -1] + list(range(len(stories)))), min_size=n, max_size=n))
    relay = draw(st.lists(st.sampled_from(["same story", "all", "random"]), min_size=n, max_size=n))
    picks = draw(st.lists(st.sets(st.integers(0, n - 1)), min_size=n, max_size=n))
    return config, late, truth, stories, told, relay, picks


@settings(max_examples=25, deadline=None)
@given(lies())
def test_no_lie_about_dropouts_makes_honest_clients_reveal_both_secrets_of_a_client(scenario):
    config, late, truth, stories, told, relay, picks = scenario
    n = config.num_clients
    clients, _, _, _ = _through_masked_input(config, [np.zeros(2)] * n, skip_input=late)
    claimed, signatures = {}, {}
    for u in range(n):
        claimed[u] = tuple(sorted(truth if told[u] < 0 else stories[told[u]] | {u}))
        try:
            signatures[u] = clients[u].consistency_check(ConsistencyRequest(0, u, claimed[u])).signature
        except HamrahError:
            continue
    broadcasts = {}
    for u in signatures:
        if relay[u] == "same story":
            chosen = [v for v in signatures if claimed[v] == claimed[u]]
        else:
            chosen = list(signatures) if relay[u] == "all" else [v for v in signatures if v in picks[u]]
        broadcasts[u] = ConsistencyBroadcast(0, u, tuple((v, signatures[v]) for v in sorted(chosen)))
    replies = _reveals([clients[u] for u in signatures], broadcasts)
    revealing = [u for u, r in replies.items() if not isinstance(r, Exception)]
    event("some clients revealed shares" if revealing else "every client aborted")
    event(f"lies told: {len({claimed[u] for u in range(n)}) > 1}")
    assert _both_secrets_revealed(replies.values()) == set()
    # Every client that revealed anything did so for one and the same contributor set.
    assert len({claimed[u] for u, r in replies.items() if not isinstance(r, Exception)}) <= 1


def test_active_stages_are_the_papers_five_rounds():
    assert ACTIVE_STAGES == ("advertise_keys", "share_keys", "masked_input", "consistency_check", "unmasking")
    config = SecAggConfig(num_clients=5, vector_length=M)
    drops = random_dropouts(5, {}, np.random.default_rng(0))
    assert run_secure_aggregation(
        _inputs(5), config, drops, identities=simulated_identities(5, 1)
    ).result.contributors == (0, 1, 2, 3, 4)
