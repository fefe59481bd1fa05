"""A device's checks of the server's roster in the malicious-server SecAgg (hamrah.device.secure.check_roster):
for any honest roster it returns exactly the CA-certified keys; any made-up device (a certificate of
another CA), a substituted own entry, a device listed twice, a wrong count or round is refused."""

from __future__ import annotations

import datetime

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

from hamrah.core.errors import AuthError, ProtocolError
from hamrah.device.secure import check_roster
from hamrah.secagg.roster import JoinIdentity, Roster, RosterEntry
from hamrah.transport.certs import make_cert
from hamrah.transport.identity import DeviceKey, identity_certificate, verify_identity


def _ca():
    key = ec.generate_private_key(ec.SECP256R1())
    return key, make_cert("ca", "hamrah CA", key.public_key(), key)


CA_KEY, CA = _ca()
OTHER_KEY, OTHER = _ca()
KEYS = [DeviceKey.generate() for _ in range(6)]
CERTS = [
    identity_certificate(f"device-{i:04d}", k.public_bytes, CA_KEY, CA).public_bytes(serialization.Encoding.DER)
    for i, k in enumerate(KEYS)
]


def _roster(n: int, ids: list[int]) -> tuple[Roster, list[JoinIdentity]]:
    joins = [JoinIdentity(bytes([i]) * 32, CERTS[i]) for i in range(n)]
    return Roster(3, tuple(RosterEntry(ids[i], joins[i].nonce, joins[i].certificate) for i in range(n))), joins


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(2, 6),
    me=st.integers(0, 5),
    gaps=st.lists(st.integers(1, 3), min_size=6, max_size=6),
    attack=st.sampled_from(["none", "foreign", "own_nonce", "own_cert", "twice", "count", "round"]),
)
def test_a_device_accepts_exactly_the_honest_roster(n, me, gaps, attack):
    me %= n
    ids = [sum(gaps[: i + 1]) for i in range(n)]  # sorted, not necessarily 0..n-1 (ids are selection positions)
    roster, joins = _roster(n, ids)
    entries, count, round_idx = list(roster.entries), n, 3
    victim = (me + 1) % n
    if attack == "foreign":  # the server's own device, certified by a CA it made
        fake = identity_certificate("device-0099", DeviceKey.generate().public_bytes, OTHER_KEY, OTHER)
        entries[victim] = RosterEntry(ids[victim], entries[victim].nonce, fake.public_bytes(serialization.Encoding.DER))
    elif attack == "own_nonce":  # an old roster replayed: not this session's nonce
        entries[me] = RosterEntry(ids[me], b"\xee" * 32, entries[me].certificate)
    elif attack == "own_cert":
        entries[me] = RosterEntry(ids[me], entries[me].nonce, CERTS[victim])
    elif attack == "twice":
        entries[victim] = RosterEntry(ids[victim], b"\xdd" * 32, entries[me].certificate)
    elif attack == "count":
        count = n + 1
    elif attack == "round":
        round_idx = 4
    forged = Roster(3, tuple(entries))
    if attack == "none":
        keys = check_roster(forged, ids[me], count, joins[me], CA, round_idx)
        assert keys == {ids[i]: KEYS[i].public_bytes for i in range(n)}
        return
    with pytest.raises(AuthError if attack == "foreign" else ProtocolError):
        check_roster(forged, ids[me], count, joins[me], CA, round_idx)


@settings(max_examples=30, deadline=None)
@given(data=st.binary(max_size=400))
def test_garbage_is_never_an_identity(data):
    with pytest.raises(AuthError):
        verify_identity(data, CA)


def test_an_expired_identity_or_a_tls_certificate_is_refused():
    with pytest.raises(AuthError, match="expired"):
        verify_identity(CERTS[0], CA, now=datetime.datetime(2100, 1, 1, tzinfo=datetime.timezone.utc))
    tls_key = ec.generate_private_key(ec.SECP256R1())
    tls = make_cert("client", "device-0000", tls_key.public_key(), CA_KEY, CA.subject)
    with pytest.raises(AuthError, match="Ed25519"):
        verify_identity(tls.public_bytes(serialization.Encoding.DER), CA)
    assert verify_identity(CERTS[2], CA) == ("device-0002", KEYS[2].public_bytes)
