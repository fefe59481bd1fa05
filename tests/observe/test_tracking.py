"""[tracking]: TensorBoard and MLflow receive exactly the round records the run writes to metrics.jsonl;
a missing extra stops the run with a clear error before anything is written; RecordFeed follows a
rewritten metrics.jsonl."""

from __future__ import annotations

import json
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hamrah.core.errors import ConfigError
from hamrah.experiments.config import from_dict
from hamrah.experiments.runner import run_experiment
from hamrah.observe.runs import read_records
from hamrah.observe.tracking import RecordFeed, Tracking, TrackingConfig

pytest.importorskip("tensorboard", reason="the tracking extra: pip install 'hamrah[tracking]'")
pytest.importorskip("mlflow", reason="the tracking extra: pip install 'hamrah[tracking]'")


def tiny(**tracking):
    return from_dict(
        {
            "data": {"dataset": "synthetic_0_0", "partition": "natural", "num_clients": 10},
            "model": {"name": "logreg"},
            "algorithm": {"name": "fedavg", "client_fraction": 0.3, "local_epochs": 1, "batch_size": 10, "lr": 0.05},
            "run": {"rounds": 3, "seed": 0},
            "tracking": tracking,
        }
    )


def test_sinks_receive_the_records_of_metrics_jsonl(tmp_path):
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    run_experiment(tiny(tensorboard=True, mlflow=True, run_name="tiny"), out)
    recs = read_records(out / "metrics.jsonl")
    assert [r["round"] for r in recs] == [1, 2, 3]
    acc = EventAccumulator(str(out / "tensorboard"))
    acc.Reload()
    tb = [(e.step, e.value) for e in acc.Scalars("test_accuracy")]
    assert tb == [(r["round"], pytest.approx(r["test_accuracy"], rel=1e-6)) for r in recs]
    client = MlflowClient((out / "mlruns").resolve().as_uri())
    run = client.search_runs([client.get_experiment_by_name("hamrah").experiment_id])[0]
    assert run.info.run_name == "tiny" and run.info.status == "FINISHED"
    assert run.data.params["algorithm.lr"] == "0.05"
    hist = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "test_loss"))
    assert hist == [(r["round"], pytest.approx(r["test_loss"])) for r in recs]


def test_missing_extra_is_a_clear_error_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow now raises ImportError
    monkeypatch.setitem(sys.modules, "mlflow.entities", None)
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match=r"hamrah\[tracking\]"):
        run_experiment(tiny(mlflow=True), out)
    assert not out.exists()


def test_nothing_switched_on_is_no_sink(tmp_path):
    assert Tracking(TrackingConfig(), tmp_path, {}).sinks == [] and Tracking(None, tmp_path, {}).sinks == []


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(1, 5), min_size=1, max_size=6))
def test_record_feed_hands_on_each_round_once_in_order(tmp_path_factory, batches):
    path = tmp_path_factory.mktemp("feed") / "metrics.jsonl"
    path.write_text(json.dumps({"round": 0}) + "\n")  # an earlier process's round: not handed on
    got = []
    feed = RecordFeed(path, got.append)
    rounds = 0
    for n in batches:  # the store rewrites the whole file after each commit
        rounds += n
        path.write_text("".join(json.dumps({"round": r, "x": r}) + "\n" for r in range(rounds + 1)))
        feed.poll()
    feed.stop()
    assert [r["round"] for r in got] == list(range(1, rounds + 1))
