"""A held report with no live Aggregator to take it is refused with ProtocolError (not a NameError)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from hamrah.core.errors import ProtocolError
from hamrah.server.reports import BoundedReports


def _state():
    return SimpleNamespace(held=[(SimpleNamespace(aggregator=0), object(), None)], clip=None, clipped=0)


def test_a_report_no_aggregator_can_take_is_refused_while_the_round_is_open():
    server = SimpleNamespace(clip=None, max_weight=1, master=SimpleNamespace(route=lambda _: None, lost=0))
    rs = _state()
    with pytest.raises(ProtocolError, match="no aggregator is alive"):
        BoundedReports._release(server, rs)
    assert rs.held == []  # popped first: it cannot be folded in twice


def test_a_report_no_aggregator_can_take_is_counted_lost_when_the_round_closes():
    server = SimpleNamespace(clip=None, max_weight=1, master=SimpleNamespace(route=lambda _: None, lost=0))
    BoundedReports._release(server, _state(), closing=True)
    assert server.master.lost == 1
