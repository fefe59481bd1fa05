"""The wire format of tensors and plans: round trips, chunking, and refusal of bad payloads."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hamrah.core.errors import ProtocolError
from hamrah.models import ModelSpec
from hamrah.transport.codec import (
    check_update,
    chunks,
    decode_metrics,
    decode_params,
    encode_params,
    join_chunks,
    spec_of,
)
from hamrah.transport.plan import Plan

P = {"a.weight": torch.randn(3, 4), "a.bias": torch.randn(3)}


def test_params_round_trip_through_chunks():
    data = encode_params(P)
    pieces = list(chunks(data, size=100))
    assert len(pieces) == math.ceil(len(data) / 100)
    back = decode_params(join_chunks(pieces, len(data), limit=10**6))
    assert set(back) == set(P) and all(torch.equal(back[k], P[k]) for k in P)


def test_join_refuses_oversize_and_wrong_length():
    with pytest.raises(ProtocolError, match="over the limit"):
        join_chunks([b"x"], expected=11, limit=10)
    with pytest.raises(ProtocolError, match="exceeds the limit"):
        join_chunks([b"x" * 6, b"x" * 6], expected=10, limit=10)
    with pytest.raises(ProtocolError, match="announced 5"):
        join_chunks([b"x" * 4], expected=5, limit=10)


@pytest.mark.parametrize("bad", [b"", b"\x00" * 16, b"garbage" * 10, encode_params(P)[:-3]])
def test_corrupt_payloads_are_protocol_errors(bad):
    with pytest.raises(ProtocolError, match="safetensors"):
        decode_params(bad)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_values_are_refused(value):
    upd = {k: v.clone() for k, v in P.items()}
    upd["a.weight"][1, 2] = value
    with pytest.raises(ProtocolError, match="NaN or infinite"):
        check_update(upd, spec_of(P))


def test_large_finite_values_pass_the_finiteness_check():
    upd = {k: torch.full_like(v, 3.0e38) for k, v in P.items()}  # their float32 sum would overflow
    check_update(upd, spec_of(P))


def test_metrics_must_be_an_object_of_finite_numbers():
    assert decode_metrics(b'{"loss": 1, "accuracy": 0.5}') == {"loss": 1.0, "accuracy": 0.5}
    for bad, word in [(b"[1]", "object"), (b'{"loss": true}', "finite"), (b"{", "JSON"), (b'{"x": "1"}', "finite")]:
        with pytest.raises(ProtocolError, match=word):
            decode_metrics(bad)


def test_plan_round_trip_and_refusals():
    plan = Plan("train", 3, {"name": "fedavg", "lr": 0.1}, ModelSpec("2nn", (1, 28, 28), 10), seed=5)
    assert Plan.from_json(plan.to_json()) == plan
    for text, word in [
        (b"nope", "not JSON"),
        (b'{"version": 99}', "version 99"),
        (plan.to_json().replace(b'"train"', b'"mine"'), "kind"),
        (plan.to_json().replace(b'"2nn"', b'"gpt"'), "can build"),
        (plan.to_json().replace(b'"seed": 5', b'"seed": -1'), r"seed = -1; expected an integer in \[0, 2\^63\)"),
        (plan.to_json().replace(b'"round": 3', b'"round": 1' + b"0" * 5000), "not JSON this runtime reads"),
        (plan.to_json().replace(b'"extra": {}', b'"extra": ' + b"[" * 100_000), "nested too deep"),
    ]:
        with pytest.raises(ProtocolError, match=word):
            Plan.from_json(text)


@pytest.mark.parametrize(
    "bad",
    [
        b'{"loss": 1' + b"0" * 400 + b"}",  # an integer too large for a float: OverflowError in math.isfinite
        b'{"loss": 1' + b"0" * 5000 + b"}",  # over Python's 4,300 digits: a ValueError from json.loads
        b'{"x": {"kind": "summed", "total": 1' + b"0" * 400 + b"}}",
        b"[" * 100_000,
    ],
)
def test_metrics_with_huge_integers_or_deep_nesting_are_protocol_errors(bad):
    from hamrah.transport.codec import decode_task_metrics

    for decode in (decode_metrics, decode_task_metrics):
        with pytest.raises(ProtocolError):
            decode(bad)


def test_a_refusal_names_a_long_value_or_many_names_briefly():
    with pytest.raises(ProtocolError) as e:
        decode_metrics(b'{"loss": "' + b"x" * 10**6 + b'"}')
    assert len(str(e.value)) < 200
    with pytest.raises(ProtocolError, match=r"unexpected \['e0', 'e1', 'e10', .*, \.\.\. 995 more\]") as e:
        check_update({**P, **{f"e{i}": torch.zeros(1) for i in range(1000)}}, spec_of(P))
    assert len(str(e.value)) < 200


_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.sampled_from([10**309, -(10**400), 2**1024])  # integers no float holds
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None)
@given(value=_json_values, raw=st.binary(max_size=64))
def test_decoding_metrics_returns_finite_numbers_or_a_protocol_error_never_anything_else(value, raw):
    """The guarantee over arbitrary input: a report's metrics header is an object of finite floats, or
    the report is refused with a ProtocolError (no OverflowError, ValueError, TypeError: no traceback)."""
    import json

    from hamrah.transport.codec import decode_task_metrics

    for data in (json.dumps(value).encode(), json.dumps({"m": value}).encode(), raw):
        try:
            out = decode_metrics(data)
        except ProtocolError:
            pass
        else:
            assert all(isinstance(v, float) and math.isfinite(v) for v in out.values())
        try:
            decode_task_metrics(data)
        except ProtocolError:
            pass
