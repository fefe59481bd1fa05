"""PSI with three and four parties: the party that blinds a list last vouches for it, so a party that
claims values it did not blind (the leader's, or the next party's) is refused, naming it; honest runs
give every party exactly the intersection, whoever leads."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hamrah.core.errors import ProtocolError
from hamrah.vertical import run_parties
from hamrah.vertical.psi import POINT, PSIConfig, intersect

NAMES = ("guest", "host", "host2", "host3")


@settings(max_examples=25, deadline=None)
@given(
    st.lists(st.sets(st.integers(-(2**63), 2**63 - 1), max_size=12), min_size=2, max_size=4),
    st.sets(st.integers(-(2**63), 2**63 - 1), max_size=6),
    st.integers(0, 3),
    st.integers(1, 8),
)
def test_honest_parties_learn_exactly_the_intersection(sets, common, lead, chunk):
    names = NAMES[: len(sets)]
    tables = {n: np.array(sorted(s | common), np.int64) for n, s in zip(names, sets)}
    config = PSIConfig(names[lead % len(names)], chunk=chunk)
    roles = {n: (lambda ch, ids=ids: intersect(ch, ids, config)) for n, ids in tables.items()}
    results, _ = run_parties(roles, timeout_s=30)
    expected = sorted(set.intersection(*(set(t.tolist()) for t in tables.values())))
    assert all(results[n].tolist() == expected for n in names)


class Deviating:
    """A party's channel that runs the honest protocol but rewrites what it sends: ``edit(tag, to,
    points, seen)`` returns the points it sends instead; ``seen`` holds every list it sent by (to, tag)."""

    def __init__(self, channel, edit):
        self._channel, self._edit, self.seen = channel, edit, {}

    def __getattr__(self, name):
        return getattr(self._channel, name)

    def send(self, to, tag, message):
        points = message.get("points")
        if isinstance(points, np.ndarray) and len(points):
            self.seen.setdefault((to, tag), []).append(points)
            points = self._edit(tag, to, points, self.seen)
            message = {**message, "points": points}
        self._channel.send(to, tag, message)


def _everything(seen, to):  # the fully blinded list this party returned to ``to``
    return np.concatenate(seen[(to, "psi/full")])


def _swapped(points, theirs):  # the first two of ``points``, then every value of ``theirs`` not in ``points``
    return np.concatenate([points[:2], theirs[~np.isin(theirs.view(f"S{POINT}").ravel(), points.view(f"S{POINT}"))]])


def _run(n, liar, edit):
    sets = {"guest": range(10), "host": range(10), "host2": range(10), "host3": range(10)}
    sets[liar] = [0, 1, *range(100, 108)]  # the liar shares only ids 0 and 1
    names = NAMES[:n]

    def role(name):
        def run(ch):
            return intersect(Deviating(ch, edit) if name == liar else ch, np.array(list(sets[name])))

        return run

    return run_parties({name: role(name) for name in names}, timeout_s=30)


@pytest.mark.parametrize("n", [3, 4])
def test_the_last_party_claiming_the_leaders_ids_is_refused(n):
    """The party before the leader in the ring blinds the leader's list last: adding those values to its
    set made the leader (and every other party) take ids 2..9, which it does not hold, for shared."""
    last = NAMES[n - 1]

    def add(tag, to, points, seen):
        return np.unique(np.concatenate([points, _everything(seen, "guest")]), axis=0) if tag == "psi/set" else points

    with pytest.raises(ProtocolError, match=rf"'{last}' sent more than 10 values in its 'psi/set' list"):
        _run(n, last, add)

    def swap(tag, to, points, seen):  # as many values as announced: its own 100..107 swapped for the leader's
        if tag != "psi/set":
            return points
        return _swapped(points, _everything(seen, "guest"))

    with pytest.raises(
        ProtocolError,
        match=rf"'{last}' sent in its 'psi/set' list 8 values that are not its own fully blinded ids; expected only "
        rf"the 10 values '{NAMES[n - 2]}' blinded last for it \(one of '{last}' and '{NAMES[n - 2]}' deviates",
    ):
        _run(n, last, swap)


def test_a_middle_party_claiming_the_next_partys_ids_is_refused():
    """With four parties host2 blinds host3's list last: claiming it would drop host2 from the intersection."""

    def swap(tag, to, points, seen):
        if tag != "psi/set":
            return points
        theirs = _everything(seen, "host3")
        return np.concatenate(
            [points[:2], theirs[~np.isin(theirs.view(f"S{POINT}").ravel(), points.view(f"S{POINT}"))]]
        )

    with pytest.raises(ProtocolError, match=r"'host2' sent in its 'psi/set' list 8 values .* 'host' blinded last"):
        _run(4, "host2", swap)


def test_a_false_witness_is_refused():
    """A party that vouches for the next party's set with other values stops the run, naming both."""

    def lie(tag, to, points, seen):
        if tag != "psi/witness":
            return points
        out = points.copy()
        # one of its own values instead, one the witness does not hold (its shared ids' values are the
        # same as the next party's: the first one could be a value already there, and no lie at all)
        held = {np.asarray(p).tobytes() for p in points}
        out[0] = next(v for v in seen[("guest", "psi/set")][0] if np.asarray(v).tobytes() not in held)
        return out

    with pytest.raises(ProtocolError, match=r"'host2' sent in its 'psi/set' list 1 values .* 'host' deviates"):
        _run(3, "host", lie)


def test_a_relayed_list_must_have_its_owners_size():
    """Every party announces its set's size first; a list relayed with more (or fewer) values than its
    owner announced is refused, so no party can make another blind without end."""

    def pad(tag, to, points, seen):
        return np.concatenate([points, points]) if tag == "psi/ring2" else points

    with pytest.raises(ProtocolError, match=r"'host' sent more than 10 values in its 'psi/ring2' list \(the ids of"):
        _run(3, "host", pad)

    def cut(tag, to, points, seen):
        return points[:-1] if tag == "psi/ring2" else points

    with pytest.raises(ProtocolError, match=r"'host' sent 9 values in its 'psi/ring2' list, expected 10 \(the ids of"):
        _run(3, "host", cut)


def test_a_hello_without_a_size_is_refused():
    def no_size(ch):
        ch.send("guest", "psi/hello", {"settings": json.dumps({"leader": "guest", "id_type": "int"})})
        ch.recv("guest", "psi/hello")

    with pytest.raises(ProtocolError, match=r"psi/hello from 'host': expected 'size', its number of ids"):
        run_parties({"guest": lambda ch: intersect(ch, np.arange(3)), "host": no_size}, timeout_s=10)


@pytest.mark.parametrize("settings", ["[" * 100_000, json.dumps({"leader": "guest", "pad": "x" * 5000}), 7])
def test_hello_settings_too_deep_or_too_long_are_refused(settings):
    """The settings used to be parsed whatever their length: a deeply nested one stopped the party with
    a RecursionError traceback, a long one cost memory; both are refused by name now."""

    def host(ch):
        ch.send("guest", "psi/hello", {"settings": settings, "size": 1})
        ch.recv("guest", "psi/hello")

    with pytest.raises(ProtocolError, match=r"psi/hello from .host.: expected its settings as a JSON object of at"):
        run_parties({"guest": lambda ch: intersect(ch, np.arange(3)), "host": host}, timeout_s=10)
