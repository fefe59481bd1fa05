"""The party inbox: retried duplicates are dropped, gaps refused, a new session replaces the old one."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from hamrah.parties.channel import Inbox


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 12), max_size=40))
def test_frames_are_kept_once_in_order_and_gaps_are_refused(seqs):
    inbox = Inbox(("host",))
    session = b"s" * 16
    accepted = []
    assert inbox.put("host", session, 5, b"x") is None and not inbox.items["host"]  # no session yet: dropped
    for seq in [0, *seqs]:
        expected = inbox.next_seq["host"]
        error = inbox.put("host", session, seq, b"m%d" % seq)
        if seq > expected:
            assert error is not None and "arrived before" in error
        else:
            assert error is None
            if seq == expected:
                accepted.append(seq)
    assert [data for _, data in inbox.items["host"]] == [b"m%d" % s for s in accepted]
    assert accepted == list(range(len(accepted)))


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 5), st.integers(0, 5))
def test_a_new_session_replaces_the_stale_one(old_count, new_count):
    inbox = Inbox(("host",))
    old, new = b"a" * 16, b"b" * 16
    for i in range(old_count):
        inbox.put("host", old, i, b"old")
    for i in range(new_count):
        inbox.put("host", new, i, b"new")
    inbox.put("host", old, old_count, b"late")  # a late frame of the dead session
    expected = [b"new"] * new_count if new_count else [b"old"] * old_count + [b"late"]
    assert [d for _, d in inbox.items["host"]] == expected
