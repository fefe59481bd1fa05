"""Refusal reasons: a device's own values (numbers, quoted ids) never make a reason of their own, and
the table of reasons is bounded whatever the messages say."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from hamrah.core.errors import ProtocolError
from hamrah.server.guard import MAX_REASONS, OTHER_REASONS, Guard, reason_of
from hamrah.transport.identity import RequestRefused

TEMPLATES = [
    "report status {n}: expected COMPLETED, ABORTED or FAILED",
    "num_examples = {n}: expected 1..1000000",
    "task {s!r} belongs to another device",
    "task {s!r} already accepted",
    "metrics: {s} = {n}, expected a finite number",
]


@given(st.sampled_from(TEMPLATES), st.integers(), st.integers(), st.text(max_size=30), st.text(max_size=30))
def test_messages_differing_in_a_devices_values_give_one_reason(template, n1, n2, s1, s2):
    s1, s2 = s1.replace("'", ""), s2.replace("'", "")
    first, second = (ProtocolError(template.format(n=n, s=s)) for n, s in ((n1, s1), (n2, s2)))
    assert reason_of(first) == reason_of(second)


@given(st.lists(st.text(min_size=1, max_size=60), min_size=1, max_size=300))
def test_the_table_of_reasons_is_bounded(messages):
    guard = Guard(rate_per_s=1.0, rate_burst=1, max_streams=1)
    counted = [guard.count(reason_of(ProtocolError(m))) for m in messages]
    assert len(guard.refusals) <= MAX_REASONS + 1
    assert sum(guard.refusals.values()) == len(messages)  # every refusal counted, none lost
    assert all(c in guard.refusals for c in counted)
    if len({reason_of(ProtocolError(m)) for m in messages}) > MAX_REASONS:
        assert guard.refusals[OTHER_REASONS] > 0


def test_an_error_with_its_own_label_is_counted_by_it():
    assert reason_of(RequestRefused("revoked", "device clinic-7: its token is revoked")) == "RequestRefused: revoked"
    assert reason_of(ProtocolError("update: 3 tensors, expected 2")) == "ProtocolError: update"
