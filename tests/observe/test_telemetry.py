"""Telemetry counts exactly the events it is fed; Prometheus exports those counts; run folders read
back what was written, whatever garbage surrounds it."""

from __future__ import annotations

import json
import math

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from hamrah.observe.prometheus import PHASE_BUCKETS, TelemetryCollector, exposition, phase_histograms
from hamrah.observe.runs import RunFolder, epsilon_of, phases_of, read_records, run_status, write_failure
from hamrah.observe.telemetry import REPORT_STATUSES, SELECT_OUTCOMES, Telemetry

devices = st.text("0123456789abcdef", min_size=1, max_size=16)
events = st.lists(
    st.one_of(
        st.tuples(st.just("checkin"), devices, st.booleans()),
        st.tuples(st.just("answered"), devices, st.sampled_from(SELECT_OUTCOMES)),
        st.tuples(st.just("report"), devices, st.sampled_from(REPORT_STATUSES), st.integers(0, 10**7)),
        st.tuples(st.just("refused"), devices, st.text(max_size=100)),
        st.tuples(st.just("down"), st.integers(0, 10**7)),
    ),
    max_size=60,
)


def feed(tel: Telemetry, evs) -> None:
    for e in evs:
        if e[0] == "checkin":
            tel.checkin(e[1], e[2])
        elif e[0] == "answered":
            tel.answered(e[1], e[2], rnd=1)
        elif e[0] == "report":
            tel.report(e[1], e[2], rnd=1, nbytes=e[3])
        elif e[0] == "refused":
            tel.refused(e[1], e[2], rnd=1)
        else:
            tel.transferred("down", e[1])


@settings(max_examples=60, deadline=None)
@given(events, st.integers(1, 5))
def test_counters_equal_the_events_fed_and_tables_stay_bounded(evs, max_devices):
    tel = Telemetry(max_devices=max_devices, max_events=7)
    feed(tel, evs)
    snap = tel.snapshot()
    c = snap["counters"]
    assert c.get("checkins", {}).get("", 0) == sum(e[0] == "checkin" for e in evs)
    for outcome in SELECT_OUTCOMES:
        assert c.get("selections", {}).get(outcome, 0) == sum(e[0] == "answered" and e[2] == outcome for e in evs)
    for status in REPORT_STATUSES:
        assert c.get("reports", {}).get(status, 0) == sum(e[0] == "report" and e[2] == status for e in evs)
    assert sum(c.get("refusals", {}).values()) == sum(e[0] == "refused" for e in evs)
    assert c.get("bytes", {}).get("up", 0) == sum(e[3] for e in evs if e[0] == "report")
    assert c.get("bytes", {}).get("down", 0) == sum(e[1] for e in evs if e[0] == "down")
    assert snap["known_devices"] <= max_devices and len(snap["events"]) <= 7
    assert snap["live"]["reported"] == sum(e[0] == "report" and e[2] == "accepted" for e in evs)


def test_devices_connected_by_last_checkin_and_keys_cut():
    now = [1000.0]
    tel = Telemetry(connected_s=60, clock=lambda: now[0])
    tel.checkin("a" * 64, True)
    now[0] += 100
    tel.checkin("b" * 64, False)
    snap = tel.snapshot()
    assert snap["connected"] == 1 and snap["eligible"] == 0
    assert {d["key"] for d in snap["devices"]} == {"a" * 12, "b" * 12}


def test_new_round_resets_live_counts():
    tel = Telemetry()
    tel.answered("d1", "selected", rnd=1)
    tel.report("d1", "accepted", rnd=1, nbytes=10)
    tel.answered("d1", "selected", rnd=2)
    assert tel.snapshot()["live"] == {
        "round": 2,
        "selected": 1,
        "evaluate": 0,
        "reported": 0,
        "aborted": 0,
        "failed": 0,
        "late": 0,
        "refused": 0,
    }
    tel.report("d2", "late", rnd=2)
    assert tel.snapshot()["live"]["late"] == 1


@settings(max_examples=40, deadline=None)
@given(
    events,
    st.lists(
        st.fixed_dictionaries(
            {"round": st.integers(1, 999)},
            optional={"selection_s": st.floats(0, 500), "reporting_s": st.floats(0, 500), "epsilon": st.floats(0, 50)},
        ),
        max_size=12,
    ),
)
def test_exposition_parses_back_to_the_counts(evs, records):
    tel = Telemetry()
    feed(tel, evs)
    families = {
        f.name: f for f in text_string_to_metric_families(exposition(TelemetryCollector(tel, lambda: records)).decode())
    }
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families.values() for s in f.samples}
    assert samples[("hamrah_checkins_total", ())] == sum(e[0] == "checkin" for e in evs)
    refused = sum(v for (n, _), v in samples.items() if n == "hamrah_refusals_total")
    assert refused == sum(e[0] == "refused" for e in evs)
    assert samples[("hamrah_rounds_committed", ())] == len(records)
    for phase in ("selection", "reporting"):
        n = sum(f"{phase}_s" in r for r in records)
        assert samples.get(("hamrah_round_phase_seconds_count", (("phase", phase),)), 0) == n
    eps = [r["epsilon"] for r in records if "epsilon" in r]
    assert samples.get(("hamrah_epsilon_spent", ())) == (eps[-1] if eps else None)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0, 400), max_size=30))
def test_phase_histogram_buckets_are_cumulative_and_complete(times):
    hist = phase_histograms([{"selection_s": t} for t in times])
    if not times:
        assert hist == {}
        return
    cum, total, n = hist["selection"]
    assert n == len(times) and cum[-1] == n and cum == sorted(cum)
    assert math.isclose(total, sum(times), rel_tol=1e-9, abs_tol=1e-9)
    for bound, count in zip(PHASE_BUCKETS, cum):
        assert count == sum(t <= bound for t in times)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.dictionaries(st.sampled_from(["round", "test_accuracy", "epsilon"]), st.integers(0, 100)), max_size=8),
    st.text(max_size=40),
)
def test_records_survive_garbage_lines(tmp_path_factory, recs, garbage):
    path = tmp_path_factory.mktemp("run") / "metrics.jsonl"
    path.write_text(
        "".join(json.dumps(r) + "\n" + garbage.replace("{", "(") + "\n" for r in recs) + '{"round": 9', encoding="utf-8"
    )
    got = read_records(path)
    assert [r for r in got if r in recs] == recs  # every record back, in order; a half line skipped


def test_phases_and_epsilon_degrade_when_missing():
    assert phases_of({"round": 1}) == {} and epsilon_of({"round": 1}) is None
    rec = {"selection_s": 1.5, "phases": {"download": 0.2, "commit_s": 0.1}, "epsilon": 2.0, "training_s": float("nan")}
    assert phases_of(rec) == {"selection": 1.5, "download": 0.2, "commit": 0.1}
    assert epsilon_of(rec) == 2.0 and epsilon_of({"epsilon": True}) is None


@settings(max_examples=50, deadline=None)
@given(st.text(max_size=40))
def test_run_names_never_leave_the_root(tmp_path_factory, name):
    root = tmp_path_factory.mktemp("runs")
    (root / "a").mkdir()
    (root / "a" / "metrics.jsonl").write_text('{"round": 1}\n')
    folder = RunFolder(root)
    assert folder.names() == ["a"]
    if name != "a":
        try:
            folder.folder(name)
        except Exception as e:  # a clear error, never a path outside the root
            assert type(e).__name__ == "ConfigError" and "not found" in str(e)
        else:
            raise AssertionError(f"{name!r} resolved")


def test_status_finished_failed_running(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"round": 1, "test_accuracy": 0.5}\n')
    assert run_status(tmp_path, None, None).status == "running"
    assert run_status(tmp_path, None, None, now=10**11).status == "stopped"
    assert run_status(tmp_path, {"final_accuracy": 0.5}, None).status == "finished"
    write_failure(tmp_path, ValueError("boom"), ["line 1", "line 2"])
    run = RunFolder(tmp_path).run(".")
    assert run["status"] == "failed" and "ValueError: boom" in run["error"] and run["log"] == ["line 1", "line 2"]
    assert run["rounds"] == 1 and run["records"] == [{"round": 1, "test_accuracy": 0.5}]


def test_a_lab_folder_is_a_run_of_cells(tmp_path):
    lab = tmp_path / "lab"
    lab.mkdir()
    rows = [
        {"attack": a, "defence": d, "seed": 0, "main_accuracy": 0.8}
        for d in ("mean", "median")
        for a in ("none", "sign_flip")
    ]
    (lab / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:3]))
    folder = RunFolder(tmp_path)
    assert folder.names() == ["lab"]
    run = folder.run("lab")
    assert (run["kind"], run["cells"], run["status"], run["cell_rows"]) == ("lab", 3, "running", rows[:3])
    (lab / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (lab / "lab.json").write_text(json.dumps({"config": "configs/lab_mnist.toml", "rows": rows, "wall_s": 9.0}))
    run = folder.run("lab")
    assert (run["cells"], run["status"], run["config"]) == (4, "finished", "configs/lab_mnist.toml")
    assert "rows" not in run["summary"] and run["summary"]["wall_s"] == 9.0
