"""ECDH PSI: every party gets exactly the shared ids, for 2 and 3 parties; bad input is refused."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hamrah.core.errors import ConfigError, DataError, PartyFailed, ProtocolError
from hamrah.vertical import run_parties
from hamrah.vertical.psi import POINT, PSIConfig, intersect

id_sets = st.sets(st.integers(-(2**63), 2**63 - 1), max_size=25)


def _run(sets: dict, leader: str = "guest"):
    tables = {name: np.array(sorted(s), dtype=np.int64) for name, s in sets.items()}
    roles = {name: (lambda ch, ids=ids: intersect(ch, ids, PSIConfig(leader))) for name, ids in tables.items()}
    return run_parties(roles, timeout_s=30)


@settings(max_examples=20, deadline=None)
@given(id_sets, id_sets, id_sets, st.booleans())
def test_every_party_learns_exactly_the_intersection(a, b, c, three):
    sets = {"guest": a, "host": b} | ({"host2": c} if three else {})
    results, stats = _run(sets)
    expected = sorted(set.intersection(*map(set, sets.values())))
    for name in sets:
        assert results[name].tolist() == expected
    # Each party's bytes: its relayed lists, 32 bytes per id per hop, plus headers; no ids in the clear.
    assert all(s.total_bytes > 0 for s in stats.values())


def test_leader_can_be_any_party():
    results, _ = _run({"guest": {1, 2, 3}, "host": {2, 3, 4}, "host2": {3, 2, 9}}, leader="host2")
    assert all(r.tolist() == [2, 3] for r in results.values())


def test_duplicate_ids_and_unknown_leader_are_refused():
    with pytest.raises(DataError, match="duplicate"):
        run_parties(
            {"guest": lambda ch: intersect(ch, np.array([1, 1])), "host": lambda ch: intersect(ch, np.array([1]))},
            timeout_s=10,
        )
    with pytest.raises(ConfigError, match="leader"):
        run_parties(
            {
                "guest": lambda ch: intersect(ch, np.array([1]), PSIConfig("bank")),
                "host": lambda ch: intersect(ch, np.array([1]), PSIConfig("bank")),
            },
            timeout_s=10,
        )


def test_tampered_lists_are_refused_and_named():
    def short_host(ch):  # returns the guest's list with one value dropped
        pts = ch.recv("guest", "psi/ring1")["points"]
        ch.send("guest", "psi/ring1", {"points": np.zeros((0, POINT), np.uint8)})
        ch.send("guest", "psi/full", {"points": pts[1:]})
        ch.recv("guest", "psi/full")

    with pytest.raises(ProtocolError, match="returned 2 blinded ids, expected this party's 3"):
        run_parties({"guest": lambda ch: intersect(ch, np.array([1, 2, 3])), "host": short_host}, timeout_s=10)

    def liar_guest(ch):  # claims an intersection value the host never had
        intersect_as_leader_until_set(ch)
        ch.send("host", "psi/result", {"points": np.full((1, POINT), 7, np.uint8)})

    with pytest.raises(ProtocolError, match="not in this party's set"):
        run_parties({"guest": liar_guest, "host": lambda ch: intersect(ch, np.array([5]))}, timeout_s=10)

    def bad_shape(ch):
        ch.send("host", "psi/ring1", {"points": np.zeros((2, 31), np.uint8)})
        ch.recv("host", "psi/ring1")

    with pytest.raises((ProtocolError, PartyFailed), match="shape"):
        run_parties({"guest": bad_shape, "host": lambda ch: intersect(ch, np.array([5]))}, timeout_s=10)


def intersect_as_leader_until_set(ch):
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    from hamrah.vertical.psi import _from_array, _to_array, blind, hash_ids

    key = X25519PrivateKey.generate()
    ch.send("host", "psi/ring1", {"points": _to_array(blind(key, hash_ids(np.array([9]))))})
    ch.send("host", "psi/full", {"points": _to_array(blind(key, _from_array(ch.recv("host", "psi/ring1"), "host")))})
    ch.recv("host", "psi/full")
    ch.recv("host", "psi/set")


def test_a_point_of_small_order_is_refused():
    def bad_host(ch):
        ch.recv("guest", "psi/ring1")
        ch.send("guest", "psi/ring1", {"points": np.zeros((1, POINT), np.uint8)})  # u = 0: order 1

    with pytest.raises(ProtocolError, match="small order"):
        run_parties({"guest": lambda ch: intersect(ch, np.array([1])), "host": bad_host}, timeout_s=10)
