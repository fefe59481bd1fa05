"""Per-device limits and the fair draw, as properties over arbitrary inputs."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hamrah.server.guard import (
    MALFORMED,
    Guard,
    RateLimited,
    TokenBucket,
    TooManyStreams,
    add_service,
    reason_of,
)
from hamrah.server.rounds import draw


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0, 100), max_size=200), st.floats(0.1, 50), st.integers(1, 20))
def test_a_token_bucket_never_admits_more_than_burst_plus_rate_times_time(times, rate, burst):
    bucket = TokenBucket(rate, burst)
    admitted = [t for t in sorted(times) if bucket.take(t)]
    for i, start in enumerate(admitted):  # any window [start, end] holds at most burst + rate * (end - start)
        for end in admitted[i:]:
            inside = sum(start <= t <= end for t in admitted)
            assert inside <= burst + rate * (end - start) + 1e-6


@settings(max_examples=100, deadline=None)
@given(st.lists(st.text(min_size=1, max_size=8), unique=True, max_size=30), st.integers(-3, 40), st.integers(0, 2**32))
def test_the_draw_is_fair_sized_seeded_and_blind_to_arrival_order(candidates, slots, seed):
    chosen = draw(candidates, slots, random.Random(seed))
    assert chosen <= set(candidates)
    assert len(chosen) == max(0, min(slots, len(candidates)))
    shuffled = random.Random(seed + 1).sample(candidates, len(candidates))
    assert draw(shuffled, slots, random.Random(seed)) == chosen  # arriving first buys nothing


def test_first_come_does_not_win_the_draw():
    """With 2 slots and 20 candidates, the 2 earliest arrivals are drawn together in few seeds."""
    candidates = [f"d{i:02d}" for i in range(20)]
    both_first = sum(draw(candidates, 2, random.Random(s)) == {"d00", "d01"} for s in range(200))
    assert both_first <= 5  # expected 200 / C(20, 2) = 1.05


def test_stream_and_rate_limits_refuse_with_their_reason():
    guard = Guard(rate_per_s=1.0, rate_burst=2, max_streams=1)
    guard.call("a", 0.0)
    guard.call("a", 0.0)
    with pytest.raises(RateLimited, match="rate limit"):
        guard.call("a", 0.0)
    guard.call("b", 0.0)  # another device has its own bucket
    guard.call("a", 1.5)  # refilled
    with guard.stream("a"):
        with pytest.raises(TooManyStreams, match="at most 1"), guard.stream("a"):
            pass
        with guard.stream("b"):
            pass
    with guard.stream("a"):  # released
        pass
    assert reason_of(RateLimited("device over its rate limit of 1 calls/s")).startswith("RateLimited")
    assert not MALFORMED.HasField("header") and callable(add_service)


def test_a_device_sitting_out_is_turned_away_without_spinning(tmp_path):
    """A no-show device checking in while a round selects is answered after one look (the Selector
    used to loop on the open round's event, asking again and again until its hold expired)."""
    import asyncio

    from tests.server.driver import make_coordinator, open_round

    from hamrah.server.selector import Selector
    from hamrah.transport.proto import fl_pb2 as pb

    coord = make_coordinator(tmp_path, goal_count=2, over_selection=1.0, selection_timeout_s=2.0, max_round_attempts=1)
    coord.no_show["lazy"] = 10**6
    asked = []
    original = coord.request

    async def counting(device):
        asked.append(device)
        return await original(device)

    coord.request = counting
    selector = Selector(0, coord, hold_s=1.5)
    state = pb.DeviceState(idle=True, charging=True, unmetered=True)

    async def go():
        runner = asyncio.ensure_future(coord.run())
        await open_round(coord, 1)
        reply = await selector.check_in("lazy", pb.CheckInRequest(state=state))
        runner.cancel()
        return reply

    reply = asyncio.run(go())
    assert not reply.HasField("task") and reply.message == "no slot in this round"
    assert asked == ["lazy"]  # one look, no spin
    coord.store.close()
