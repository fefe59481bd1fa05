"""The JOIN roster of the actively secure SecAgg over a network, and the session id signatures are bound to:
codec round trips, any malformed input refused with ProtocolError, and a signature made in one session
(one roster, one fresh nonce per client) never verifying in another, even with the same round number."""

from __future__ import annotations

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from hypothesis import given, settings
from hypothesis import strategies as st

from hamrah.core.errors import AuthError, ProtocolError
from hamrah.secagg import (
    ActiveSecAggClient,
    ActiveSecAggServer,
    SecAggConfig,
    identity_public_key,
    simulated_identities,
)
from hamrah.secagg.active import contributors_payload, keys_payload
from hamrah.secagg.roster import NONCE_BYTES, JoinIdentity, Roster, RosterEntry, session_id

nonces = st.binary(min_size=NONCE_BYTES, max_size=NONCE_BYTES)
certs = st.binary(min_size=1, max_size=300)
entries = st.lists(st.tuples(nonces, certs), min_size=1, max_size=6)


@settings(max_examples=40, deadline=None)
@given(round_id=st.integers(0, 2**64 - 1), items=entries, cut=st.integers(0, 10_000), junk=st.binary(max_size=40))
def test_a_roster_round_trips_and_any_truncation_or_garbage_is_refused(round_id, items, cut, junk):
    roster = Roster(round_id, tuple(RosterEntry(2 * i, n, c) for i, (n, c) in enumerate(items)))
    data = roster.to_bytes()
    assert Roster.from_bytes(data) == roster
    join = JoinIdentity(*items[0])
    assert JoinIdentity.from_bytes(join.to_bytes()) == join
    with pytest.raises(ProtocolError):
        Roster.from_bytes(data[: cut % len(data)])
    with pytest.raises(ProtocolError):
        Roster.from_bytes(data + b"\0" + junk)
    with pytest.raises(ProtocolError):
        JoinIdentity.from_bytes(join.to_bytes()[:-1])
    with pytest.raises(ProtocolError):
        Roster.from_bytes(junk)


@settings(max_examples=30, deadline=None)
@given(items=entries, flip=st.integers(0, 10_000))
def test_any_change_to_a_roster_changes_the_session_id(items, flip):
    roster = Roster(1, tuple(RosterEntry(i, n, c) for i, (n, c) in enumerate(items)))
    data = bytearray(roster.to_bytes())
    pos = 12 + flip % (len(data) - 12)  # past the header: any id, nonce, length or certificate byte
    data[pos] ^= 0x01
    try:
        other = Roster.from_bytes(bytes(data))
    except ProtocolError:
        return  # not a roster any more: nothing to sign
    assert session_id(other) != session_id(roster)


@settings(max_examples=20, deadline=None)
@given(n=st.integers(3, 6), s1=nonces, s2=nonces, round_id=st.integers(0, 2**32))
def test_a_signature_of_one_session_never_verifies_in_another(n, s1, s2, round_id):
    """A lying server replaying a client's signed keys or contributor-set signature from another session
    (e.g. an earlier attempt of the same round) is refused by the server state machine and by clients."""
    if s1 == s2:
        return
    ids = simulated_identities(n, seed=round_id % 97)
    public = {u: identity_public_key(k) for u, k in ids.items()}
    config = SecAggConfig(num_clients=n, vector_length=4)
    old = ActiveSecAggClient(0, config, signing_key=ids[0], verify_keys=public, round_id=round_id, session=s1)
    advert = old.advertise_keys()
    server = ActiveSecAggServer(config, verify_keys=public, round_id=round_id, session=s2)
    with pytest.raises(AuthError):
        server.receive(advert)
    u3 = tuple(range(n))
    signature = old._identity.sign(contributors_payload(round_id, u3, s1))
    key = Ed25519PublicKey.from_public_bytes(public[0])
    key.verify(signature, contributors_payload(round_id, u3, s1))
    with pytest.raises(InvalidSignature):
        key.verify(signature, contributors_payload(round_id, u3, s2))
    assert keys_payload(round_id, 0, advert.c_public, advert.s_public, s1) != keys_payload(
        round_id, 0, advert.c_public, advert.s_public, s2
    )
