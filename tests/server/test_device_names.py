"""The server's device names and sessions: bounded, whatever ids callers claim."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from hamrah.server.names import DeviceNames


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 30), st.integers(0, 3)), max_size=200), st.integers(1, 8))
def test_devices_kept_are_bounded_and_the_most_recently_seen(calls, cap):
    names = DeviceNames(max_devices=cap)
    for device, session in calls:
        names.checked_in(f"d{device}", f"name{device}", f"s{session}")
    assert len(names.sessions) <= cap and set(names.names) <= set(names.sessions)
    recent = list(dict.fromkeys(f"d{d}" for d, _ in reversed(calls)))[:cap]
    assert set(names.sessions) == set(recent)
    for d in recent:
        assert names.who(d).startswith(f"name{d[1:]} [")


def test_a_flood_of_fresh_ids_forgets_the_oldest_not_a_device_seen_since():
    names = DeviceNames(max_devices=100)
    names.checked_in("site", "site-a", "p1")
    for i in range(1_000):
        names.checked_in(f"bogus{i}", "", "")
        if i % 50 == 0:
            names.checked_in("site", "site-a", "p1")  # keeps checking in
    assert len(names.sessions) == 100
    assert names.who("site") == "site-a [site]"
    assert names.checked_in("site", "site-a", "p2")  # its restart is still recognised
    assert names.superseded("site", "p1")
