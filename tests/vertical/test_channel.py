"""The vertical-FL wire format and the in-process network."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from hamrah.core.errors import PartyFailed, ProtocolError
from hamrah.vertical import LocalNetwork, decode, encode, run_parties

arrays = hnp.arrays(
    dtype=st.sampled_from([np.float32, np.float64, np.int64, np.uint8, np.bool_, np.int32]),
    shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5),
)
values = st.one_of(
    arrays,
    st.binary(max_size=64),
    st.text(max_size=20),
    st.integers(),
    st.booleans(),
    st.floats(allow_nan=False),
    st.tuples(*[st.integers(0, 2**2100)] * 3),
)


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=10), st.dictionaries(st.text(min_size=1, max_size=8), values, max_size=5))
def test_any_message_round_trips(tag, message):
    env = decode(encode(tag, message))
    assert env.tag == tag and set(env.fields) == set(message)
    for name, value in message.items():
        got = env.fields[name]
        if isinstance(value, np.ndarray):
            assert got.dtype == value.dtype and got.shape == value.shape
            np.testing.assert_array_equal(got, value)
        else:
            assert got == value and type(got) is type(value)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_mutated_or_truncated_messages_are_refused_cleanly(data):
    raw = bytearray(encode("grad", {"g": np.arange(6, dtype=np.float64), "c": (5, 7, 2**100), "s": "x"}))
    if data.draw(st.booleans()):
        raw = raw[: data.draw(st.integers(0, len(raw) - 1))]
    else:
        for _ in range(data.draw(st.integers(1, 4))):
            raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    try:
        decode(bytes(raw))
    except ProtocolError:
        pass  # the only error allowed


def test_objects_and_pickles_cannot_be_sent():
    with pytest.raises(ProtocolError, match="cannot send a dict"):
        encode("t", {"x": {"a": 1}})
    with pytest.raises(ProtocolError, match="dtype object not allowed"):
        encode("t", {"x": np.array([object()])})
    with pytest.raises(ProtocolError, match="non-negative ints"):
        encode("t", {"c": (1, -2)})


def test_deeply_nested_header_is_a_protocol_error():
    header = b"[" * 100_000 + b"]" * 100_000
    raw = b"HVM1" + len(header).to_bytes(4, "little") + header
    with pytest.raises(ProtocolError, match="expected JSON|expected an object"):
        decode(raw)


def test_parties_exchange_in_order_and_count_bytes():
    def guest(ch):
        ch.send("host", "x", {"v": np.ones(10)})
        return ch.recv("host", "y")["w"]

    def host(ch):
        v = ch.recv("guest", "x")["v"]
        ch.send("guest", "y", {"w": float(v.sum())})
        return "done"

    results, stats = run_parties({"guest": guest, "host": host})
    assert results == {"guest": 10.0, "host": "done"}
    assert stats["guest"].sent_bytes["host"] == stats["host"].received_bytes["guest"] > 80


def test_wrong_tag_is_refused_naming_the_sender():
    def guest(ch):
        ch.send("host", "weights", {"w": 1})

    def host(ch):
        ch.recv("guest", "gradients")

    with pytest.raises(ProtocolError, match="from 'guest': expected a 'gradients' message, got 'weights'"):
        run_parties({"guest": guest, "host": host})


def test_a_failing_party_stops_the_others_with_its_name():
    def guest(ch):
        raise ValueError("disk full")

    def host(ch):
        ch.recv("guest", "x")

    def arbiter(ch):
        ch.recv("host", "y")

    with pytest.raises(PartyFailed, match="party 'guest': ValueError: disk full"):
        run_parties({"guest": guest, "host": host, "arbiter": arbiter})


def test_a_silent_party_times_out():
    net = LocalNetwork(["a", "b"], timeout_s=0.05)
    with pytest.raises(PartyFailed, match="party 'b': sent nothing"):
        net.channel("a").recv("b", "x")


def test_unknown_peer_and_oversized_message():
    net = LocalNetwork(["a", "b"], max_message_bytes=100)
    a, b = net.channel("a"), net.channel("b")
    with pytest.raises(ProtocolError, match="not a peer"):
        a.send("c", "x", {})
    a.send("b", "x", {"v": np.zeros(100)})
    with pytest.raises(ProtocolError, match="exceeds the 100-byte limit"):
        b.recv("a", "x")
