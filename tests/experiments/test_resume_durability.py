"""A run stopped at any point resumes to exactly the uninterrupted run's rows, summary and model: killed
between the checkpoint's two files, after its last checkpoint, while a resume rewrites the metric rows;
a run with error feedback (client state in its pipeline) checkpoints and resumes; a run started anew in
a folder is never resumed from the checkpoint of the run it replaced."""

from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors.torch import load_file

from hamrah.core.errors import ConfigError
from hamrah.experiments import runner
from hamrah.experiments.config import from_dict
from hamrah.experiments.runner import prepare, run_experiment
from hamrah.simulation.resume import restore, snapshot

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models: threads only add contention


def _config(rounds: int, algorithm: str = "fedavg", run: dict | None = None, **extra):
    alg = {"name": algorithm, "client_fraction": 0.1, "local_epochs": 1, "batch_size": 50, "lr": 0.1}
    return from_dict(
        {
            "data": {"dataset": "mnist", "partition": "iid", "num_clients": 20},
            "model": {"name": "logreg"},
            "algorithm": alg,
            "run": {"rounds": rounds, "seed": 3, "checkpoint_every": 1, "workers": 1, **(run or {})},
            **extra,
        }
    )


def _rows(out):
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "elapsed_s"} for r in rows]


def _same_run(a, b):
    assert _rows(a) == _rows(b)
    ta, tb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)
    sa, sb = (json.loads((d / "summary.json").read_text()) for d in (a, b))
    skip = {"wall_s", "seconds_per_round"}
    assert {k: v for k, v in sa.items() if k not in skip} == {k: v for k, v in sb.items() if k not in skip}


class Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs, the folder is left as it is."""


def _kill_at(monkeypatch, name: str, nth: int) -> None:
    """Stop the process just before the ``nth`` rename of a file to ``name``."""
    real, seen = os.replace, []

    def replace(src, dst):
        if os.path.basename(dst) == name:
            seen.append(dst)
            if len(seen) == nth:
                raise Killed
        real(src, dst)

    monkeypatch.setattr(os, "replace", replace)


def test_killed_between_the_checkpoints_two_files_it_resumes(tmp_path, monkeypatch):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    run_experiment(_config(4), whole, plot=False)
    with monkeypatch.context() as m:
        _kill_at(m, "checkpoint.json", 3)  # round 3's tensors are in place, checkpoint.json still says 2
        with pytest.raises(Killed):
            run_experiment(_config(4), killed, plot=False)
    assert json.loads((killed / "checkpoint.json").read_text())["round"] == 2
    run_experiment(_config(4), killed, plot=False, resume=True)
    _same_run(killed, whole)


@pytest.mark.parametrize("stop_at_target", [False, True])
def test_killed_after_its_last_checkpoint_a_resume_writes_the_final_files(tmp_path, monkeypatch, stop_at_target):
    run = {"target_accuracy": 0.5, "stop_at_target": True, "checkpoint_every": 10} if stop_at_target else {}
    cfg = _config(40 if stop_at_target else 3, run=run)
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    summary = run_experiment(cfg, whole, plot=False)
    assert summary["rounds_run"] < 10 if stop_at_target else summary["rounds_run"] == 3
    with monkeypatch.context() as m:
        _kill_at(m, "model.safetensors", 1)  # the last round checkpointed, no model or summary yet
        with pytest.raises(Killed):
            run_experiment(cfg, killed, plot=False)
    assert not (killed / "summary.json").exists()
    run_experiment(cfg, killed, plot=False, resume=True)
    _same_run(killed, whole)
    with pytest.raises(ConfigError, match="is complete"):
        run_experiment(cfg, killed, plot=False, resume=True)


def test_killed_while_a_resume_rewrites_the_rows_loses_none(tmp_path, monkeypatch):
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    run_experiment(_config(4), whole, plot=False)
    run_experiment(_config(2), parts, plot=False)
    written = (parts / "metrics.jsonl").read_text()
    real = runner.record_line

    def record_line(row):
        if row["round"] == 2:
            raise Killed
        return real(row)

    with monkeypatch.context() as m:
        m.setattr(runner, "record_line", record_line)
        with pytest.raises(Killed):
            run_experiment(_config(4), parts, plot=False, resume=True)
    assert (parts / "metrics.jsonl").read_text() == written
    run_experiment(_config(4), parts, plot=False, resume=True)
    _same_run(parts, whole)


def test_a_run_with_error_feedback_checkpoints_and_resumes_exactly(tmp_path):
    ef = {"compression": {"codec": "topk", "fraction": 0.1, "error_feedback": True}}
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    run_experiment(_config(4, **ef), whole, plot=False)  # used to stop at its first checkpoint
    run_experiment(_config(2, **ef), parts, plot=False)
    saved = load_file(str(parts / "checkpoint.safetensors"))
    assert any(k.startswith("pipeline/") for k in saved)  # the clients' residuals
    run_experiment(_config(4, **ef), parts, plot=False, resume=True)
    _same_run(parts, whole)


def test_a_run_started_anew_is_not_resumed_from_the_run_it_replaced(tmp_path):
    out = tmp_path / "run"
    run_experiment(_config(3), out, plot=False)

    def crash(rec):
        raise Killed  # the new run stops in round 1, before its first checkpoint

    with pytest.raises(Killed):
        run_experiment(_config(3), out, on_round=crash, plot=False)
    with pytest.raises(ConfigError, match="no checkpoint to resume from"):
        run_experiment(_config(5), out, plot=False, resume=True)


def test_the_counters_of_kept_models_are_checkpointed():
    prep = prepare(_config(2))
    sim = prep.simulator()
    sim.skipped_rounds, sim.refused_aggregates = 2, 1
    tensors, meta = snapshot(sim, 2)
    fresh = prep.simulator()
    assert restore(fresh, tensors, meta) == 3
    assert (fresh.skipped_rounds, fresh.refused_aggregates) == (2, 1)
