"""ECDH PSI: every party gets exactly the shared ids, for 2 and 3 parties; bad input is refused."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hamrah.core.errors import ConfigError, DataError, PartyFailed, ProtocolError
from hamrah.data.vertical import load_vertical
from hamrah.vertical import run_parties
from hamrah.vertical.psi import POINT, PSIConfig, intersect

id_sets = st.sets(st.integers(-(2**63), 2**63 - 1), max_size=25)


def _run(sets: dict, leader: str = "guest", **settings):
    tables = {name: np.array(sorted(s), dtype=np.int64) for name, s in sets.items()}
    config = PSIConfig(leader, **settings)
    roles = {name: (lambda ch, ids=ids: intersect(ch, ids, config)) for name, ids in tables.items()}
    return run_parties(roles, timeout_s=30)


@settings(max_examples=20, deadline=None)
@given(id_sets, id_sets, id_sets, st.booleans(), st.integers(1, 30))
def test_every_party_learns_exactly_the_intersection(a, b, c, three, chunk):
    sets = {"guest": a, "host": b} | ({"host2": c} if three else {})
    results, stats = _run(sets, chunk=chunk)
    expected = sorted(set.intersection(*map(set, sets.values())))
    for name in sets:
        assert results[name].tolist() == expected
    # Each party's bytes: its relayed lists, 32 bytes per id per hop, plus headers; no ids in the clear.
    assert all(s.total_bytes > 0 for s in stats.values())


def test_worker_processes_blind_the_same_intersection():
    rng = np.random.default_rng(3)
    pool = rng.choice(2**40, size=300, replace=False)
    sets = {"guest": set(pool[:200].tolist()), "host": set(pool[100:].tolist())}
    results, stats = _run(sets, workers=2, chunk=16)  # each list in 7-13 chunks over two processes
    assert results["guest"].tolist() == results["host"].tolist() == sorted(pool[100:200].tolist())
    assert stats["guest"].sent_messages["host"] > 10


def test_each_party_reports_its_progress(monkeypatch):
    monkeypatch.setattr("hamrah.vertical.psi.REPORT_EVERY", 40)
    reports: dict = {"guest": [], "host": [], "host2": []}
    sets = {"guest": range(100), "host": range(50, 150), "host2": range(0, 200, 2)}
    roles = {
        name: (
            lambda ch, n=name: intersect(ch, np.array(list(sets[n])), PSIConfig(chunk=16), on_epoch=reports[n].append)
        )
        for name in sets
    }
    results, _ = run_parties(roles, timeout_s=30)
    assert results["guest"].tolist() == list(range(50, 100, 2))
    lines = [r.progress() for r in reports["guest"]]
    # its own 100 ids (a report after 48 and 96, then the end), then the lists of two peers relayed
    assert lines[:3] == [
        "psi: own ids: 48 of 100 ids blinded",
        "psi: own ids: 96 of 100 ids blinded",
        "psi: own ids: 100 of 100 ids blinded (list done)",
    ]
    # then the lists of the other two, each blinded once here (the ring: guest -> host -> host2 -> guest)
    assert lines[3:] == [
        "psi: the ids of 'host2': 48 ids blinded",
        "psi: the ids of 'host2': 96 ids blinded",
        "psi: the ids of 'host2': 100 ids blinded (list done)",
        "psi: the ids of 'host': 48 ids blinded",
        "psi: the ids of 'host': 96 ids blinded",
        "psi: the ids of 'host': 100 ids blinded (list done)",
    ]


def test_a_partys_workers_reach_the_psi_step_of_any_protocol(monkeypatch):
    """``psi.local`` (what ``[party] workers`` and ``hamrah party``'s output set) sizes the pool of the
    PSI steps run inside it and takes their progress; an explicit ``PSIConfig.workers`` wins; outside,
    one process and no report."""
    from hamrah.vertical import psi

    used: list[int] = []
    real = psi.Blinder.__init__
    monkeypatch.setattr(psi.Blinder, "__init__", lambda self, n: (used.append(n), real(self, n))[1])
    d = load_vertical("breast")
    g, h = d["guest"], d["host"].select(d["host"].ids[:300])

    lines: list[str] = []

    def guest(ch):
        with psi.local(2, lambda p: lines.append(p.progress())):
            return psi.align(ch, g, "guest", protocol="test").ids

    def host(ch):
        return intersect(ch, h.ids, PSIConfig(workers=1))

    results, _ = run_parties({"guest": guest, "host": host}, timeout_s=60)
    assert results["guest"].tolist() == results["host"].tolist() == sorted(h.ids.tolist())
    assert sorted(used) == [1, 2]
    assert lines == [
        "psi: own ids: 569 of 569 ids blinded (list done)",
        "psi: the ids of 'host': 300 ids blinded (list done)",
    ]
    with pytest.raises(ConfigError, match="psi.workers"), psi.local(0):
        pass


def test_settings_are_checked():
    for bad in ({"workers": 0}, {"workers": 1.5}, {"chunk": 0}, {"chunk": True}):
        with pytest.raises(ConfigError, match="psi\\.(workers|chunk): expected an integer"):
            PSIConfig(**bad)


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


def _hello(ch, peer, size):  # the settings and set size every PSI party exchanges first
    ch.send(peer, "psi/hello", {"settings": json.dumps({"leader": "guest", "id_type": "int"}), "size": size})
    ch.recv(peer, "psi/hello")


def _send(ch, to, tag, points):  # one list: its values, then the empty chunk that ends it
    if len(points):
        ch.send(to, tag, {"points": points})
    ch.send(to, tag, {"points": np.zeros((0, POINT), np.uint8)})


def _recv(ch, frm, tag):
    parts = []
    while len(part := ch.recv(frm, tag)["points"]):
        parts.append(part)
    return np.concatenate(parts) if parts else np.zeros((0, POINT), np.uint8)


def test_tampered_lists_are_refused_and_named():
    def short_host(ch):  # returns the guest's list with one value dropped
        _hello(ch, "guest", 0)
        pts = _recv(ch, "guest", "psi/ring1")
        _send(ch, "guest", "psi/ring1", pts[:0])
        _send(ch, "guest", "psi/full", pts[1:])
        _recv(ch, "guest", "psi/full")

    with pytest.raises(ProtocolError, match="returned 2 blinded ids, expected this party's 3"):
        run_parties({"guest": lambda ch: intersect(ch, np.array([1, 2, 3])), "host": short_host}, timeout_s=10)

    def long_host(ch):  # returns the guest's list and more, chunk after chunk
        _hello(ch, "guest", 0)
        pts = _recv(ch, "guest", "psi/ring1")
        _send(ch, "guest", "psi/ring1", pts[:0])
        for _ in range(3):
            ch.send("guest", "psi/full", {"points": pts})
        _recv(ch, "guest", "psi/full")

    with pytest.raises(ProtocolError, match="'host' sent more than 3 values in its 'psi/full' list"):
        run_parties({"guest": lambda ch: intersect(ch, np.array([1, 2, 3])), "host": long_host}, timeout_s=10)

    def liar_guest(ch):  # claims an intersection value the host never had
        intersect_as_leader_until_set(ch)
        _send(ch, "host", "psi/result", np.full((1, POINT), 7, np.uint8))

    with pytest.raises(ProtocolError, match="not in this party's set"):
        run_parties({"guest": liar_guest, "host": lambda ch: intersect(ch, np.array([5]))}, timeout_s=10)

    def bad_shape(ch):
        _hello(ch, "host", 2)
        ch.send("host", "psi/ring1", {"points": np.zeros((2, 31), np.uint8)})
        ch.recv("host", "psi/ring1")

    with pytest.raises((ProtocolError, PartyFailed), match="shape"):
        run_parties({"guest": bad_shape, "host": lambda ch: intersect(ch, np.array([5]))}, timeout_s=10)


def test_a_host_claiming_the_leaders_blinded_ids_as_its_own_is_refused():
    """The host blinds the leader's list last, so it knows the leader's fully blinded ids: it used to put
    them into its psi/set, and the leader took every one of its ids for shared (and protocols then name
    shared ids in the clear: the host learned ids it never held). The leader now checks that set against
    the host's list as it blinded it."""
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    from hamrah.vertical.psi import blind, hash_ids

    def greedy_host(ch):
        key = X25519PrivateKey.generate()
        _hello(ch, "guest", 1)
        theirs = _recv(ch, "guest", "psi/ring1")
        _send(ch, "guest", "psi/ring1", blind(key, hash_ids(np.array([3]))))
        full = blind(key, theirs)  # the guest's ids, fully blinded
        _send(ch, "guest", "psi/full", full)
        own = _recv(ch, "guest", "psi/full")
        _send(ch, "guest", "psi/set", np.unique(np.concatenate([own, full]), axis=0))
        return _recv(ch, "guest", "psi/result")

    with pytest.raises(ProtocolError, match=r"'host' sent more than 1 values in its 'psi/set' list"):
        run_parties({"guest": lambda ch: intersect(ch, np.array([1, 2, 3])), "host": greedy_host}, timeout_s=10)

    def swapping_host(ch):  # as many values as it announced, but one of them is the guest's
        key = X25519PrivateKey.generate()
        _hello(ch, "guest", 1)
        theirs = _recv(ch, "guest", "psi/ring1")
        _send(ch, "guest", "psi/ring1", blind(key, hash_ids(np.array([9]))))
        full = blind(key, theirs)
        _send(ch, "guest", "psi/full", full)
        _recv(ch, "guest", "psi/full")
        _send(ch, "guest", "psi/set", full[:1])
        return _recv(ch, "guest", "psi/result")

    with pytest.raises(
        ProtocolError,
        match=r"'host' sent in its 'psi/set' list 1 values that are not its own.*"
        r"'guest' blinded last for it",
    ):
        run_parties({"guest": lambda ch: intersect(ch, np.array([1, 2, 3])), "host": swapping_host}, timeout_s=10)


def intersect_as_leader_until_set(ch):
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    from hamrah.vertical.psi import blind, hash_ids

    key = X25519PrivateKey.generate()
    _hello(ch, "host", 1)
    _send(ch, "host", "psi/ring1", blind(key, hash_ids(np.array([9]))))
    _send(ch, "host", "psi/full", blind(key, _recv(ch, "host", "psi/ring1")))
    _recv(ch, "host", "psi/full")
    _recv(ch, "host", "psi/set")


def test_a_point_of_small_order_is_refused():
    def bad_host(ch):
        _hello(ch, "guest", 1)
        _recv(ch, "guest", "psi/ring1")
        _send(ch, "guest", "psi/ring1", np.zeros((1, POINT), np.uint8))  # u = 0: order 1

    with pytest.raises(ProtocolError, match="small order"):
        run_parties({"guest": lambda ch: intersect(ch, np.array([1])), "host": bad_host}, timeout_s=10)


def test_parties_set_up_differently_stop_before_blinding_anything():
    with pytest.raises(ConfigError, match=r"psi: '(host|guest)' runs with id_type = '(int|str)'.*every party needs"):
        run_parties(
            {
                "guest": lambda ch: intersect(ch, np.array([1, 2]), id_type="str"),
                "host": lambda ch: intersect(ch, np.array([1, 2])),
            },
            timeout_s=10,
        )
    with pytest.raises(ConfigError, match=r"runs with leader = '(host|guest)'"):
        run_parties(
            {
                "guest": lambda ch: intersect(ch, np.array([1, 2])),
                "host": lambda ch: intersect(ch, np.array([1, 2]), PSIConfig("host")),
            },
            timeout_s=10,
        )
