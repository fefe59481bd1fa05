"""One round record type and one writer for the simulator and the server."""

from __future__ import annotations

import json
import math

from hypothesis import given, settings
from hypothesis import strategies as st

from hamrah.core.records import (
    DeviceEval,
    PhaseTimings,
    RoundRecord,
    ServerCounts,
    accuracy_summary,
    record_line,
)
from hamrah.core.targets import rounds_to_target

SIMULATOR_KEYS = {"round", "test_accuracy", "test_loss", "train_loss", "clients", "elapsed_s"}
SERVER_KEYS = {  # what the server wrote before the typed record (docs/system.md, tests, benchmarks read them)
    "round",
    "attempts",
    "selected",
    "goal",
    "reported",
    "aborted",
    "failed",
    "refused",
    "lost_with_aggregators",
    "train_loss",
    "clipped",
    "weight_capped",
    "update_norm_median",
    "clip_norm",
    "selection_s",
    "reporting_s",
    "dropped",
    "round_s",
    "elapsed_s",
}

any_float = st.floats(allow_nan=True, allow_infinity=True)


def _strict(line: str):
    def refuse(token):
        raise ValueError(f"non-standard JSON constant {token}")

    return json.loads(line, parse_constant=refuse)


def test_a_simulator_record_writes_the_documented_keys_only():
    rec = RoundRecord(3, 0.9, 0.3, 0.4, 10, 1.5)
    assert set(_strict(record_line(rec))) == SIMULATOR_KEYS
    with_pipeline = RoundRecord(3, 0.9, 0.3, 0.4, 10, 1.5, 1000, 2000, 0.7)
    assert set(_strict(record_line(with_pipeline))) == SIMULATOR_KEYS | {"bytes_up", "bytes_down", "epsilon"}


def test_a_server_record_keeps_every_key_the_dict_had_and_adds_phases():
    rec = RoundRecord(
        2,
        train_loss=0.5,
        clients=8,
        elapsed_s=4.0,
        selected=10,
        refused=1,
        phases=PhaseTimings(
            selection_s=1.0,
            download_s=0.1,
            training_s=0.5,
            upload_s=0.05,
            reporting_s=2.0,
            aggregation_s=0.01,
            commit_s=0.02,
            round_s=3.1,
        ),
        server=ServerCounts(attempts=1, goal=8),
        extra={"secagg_survivors": {"join": 8}},
    )
    flat = _strict(record_line(rec))
    assert set(flat) >= SERVER_KEYS
    assert flat["reported"] == flat["clients"] == 8 and flat["dropped"] == 2
    assert {"download_s", "training_s", "upload_s", "aggregation_s", "commit_s"} <= set(flat)
    assert flat["secagg_survivors"] == {"join": 8}
    evaluated = RoundRecord(2, selected=3, clients=3, server=ServerCounts(), device_eval=DeviceEval(2, 1, 0.9, 0.3))
    assert _strict(record_line(evaluated))["device_accuracy"] == 0.9


@settings(max_examples=200, deadline=None)
@given(
    acc=any_float,
    loss=any_float,
    train=any_float,
    elapsed=any_float,
    eps=st.none() | any_float,
    phase=st.none() | any_float,
    extra=st.dictionaries(st.sampled_from(["a", "b"]), st.lists(any_float, max_size=3)),
)
def test_every_line_is_standard_json_whatever_the_numbers(acc, loss, train, elapsed, eps, phase, extra):
    rec = RoundRecord(
        1,
        acc,
        loss,
        train,
        5,
        elapsed,
        epsilon=eps,
        selected=6,
        phases=PhaseTimings(round_s=phase),
        server=ServerCounts(),
        extra=extra,
    )
    flat = _strict(record_line(rec))  # never NaN / Infinity: a non-finite number is null
    for key, value in (("test_accuracy", acc), ("train_loss", train)):
        assert flat[key] == (value if math.isfinite(value) else None)
    assert record_line(rec) == record_line(rec.to_dict())  # typed and flattened records write the same line


@settings(max_examples=200, deadline=None)
@given(accs=st.lists(st.none() | st.floats(0.0, 1.0), max_size=12), target=st.none() | st.floats(0.0, 1.0))
def test_the_summary_is_the_same_for_typed_and_flattened_records(accs, target):
    recs = [RoundRecord(r, acc, None if acc is None else 0.1, 0.2, 3, float(r)) for r, acc in enumerate(accs, 1)]
    typed, flat = accuracy_summary(recs, target), accuracy_summary([r.to_dict() for r in recs], target)
    assert typed == flat
    evaluated = [(r, a) for r, a in enumerate(accs, 1) if a is not None]
    assert typed["final_accuracy"] == (evaluated[-1][1] if evaluated else None)
    assert typed["best_accuracy"] == (max(a for _, a in evaluated) if evaluated else None)
    if target is None or not evaluated:
        assert typed["rounds_to_target"] is None
    else:
        assert typed["rounds_to_target"] == rounds_to_target(*zip(*evaluated, strict=True), target)
