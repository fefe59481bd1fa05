"""A simulation resumes from its last checkpoint and goes on exactly as an uninterrupted run (issue 14):
the same metric rows and the same final model, for FedAvg and for SCAFFOLD (clients' persistent state);
a run stopped by a crash resumes too; what cannot resume exactly is refused with the reason."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from hamrah.core.errors import ConfigError
from hamrah.experiments.config import from_dict
from hamrah.experiments.runner import run_experiment

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models: threads only add contention


def _config(rounds: int, algorithm: str = "fedavg", **extra):
    alg = {"name": algorithm, "client_fraction": 0.1, "local_epochs": 1, "batch_size": 50, "lr": 0.1}
    return from_dict(
        {
            "data": {"dataset": "mnist", "partition": "iid", "num_clients": 20},
            "model": {"name": "logreg"},
            "algorithm": alg,
            "run": {"rounds": rounds, "seed": 3, "checkpoint_every": 1, "workers": 1},
            **extra,
        }
    )


def _rows(out):
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "elapsed_s"} for r in rows]


def _same_model(a, b):
    ta, tb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)


DITTO = {"personalization": {"method": "ditto", "lam": 0.1}}  # each client's personal model is in the checkpoint


@pytest.mark.parametrize(("algorithm", "extra"), [("fedavg", {}), ("scaffold", {}), ("fedavg", DITTO)])
def test_a_resumed_run_equals_the_uninterrupted_run(tmp_path, algorithm, extra):
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    run_experiment(_config(4, algorithm, **extra), whole, plot=False)
    run_experiment(_config(2, algorithm, **extra), parts, plot=False)
    summary = run_experiment(_config(4, algorithm, **extra), parts, plot=False, resume=True)
    assert _rows(parts) == _rows(whole) and [r["round"] for r in _rows(parts)] == [1, 2, 3, 4]
    assert ("personal_accuracy" in _rows(parts)[-1]) == bool(extra)  # the personal models scored each round
    _same_model(parts, whole)
    assert summary["rounds_run"] == 4


def test_a_run_stopped_by_a_crash_resumes_from_its_last_checkpoint(tmp_path):
    whole, crashed = tmp_path / "whole", tmp_path / "crashed"
    run_experiment(_config(4), whole, plot=False)

    def crash(rec):
        if rec.round == 3:
            raise KeyboardInterrupt  # the process is stopped while round 3 is recorded

    with pytest.raises(KeyboardInterrupt):
        run_experiment(_config(4), crashed, on_round=crash, plot=False)
    assert json.loads((crashed / "checkpoint.json").read_text())["round"] == 2
    run_experiment(_config(4), crashed, plot=False, resume=True)
    assert _rows(crashed) == _rows(whole)
    _same_model(crashed, whole)


def test_what_cannot_resume_is_refused_with_the_reason(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match="no checkpoint to resume from"):
        run_experiment(_config(2), out, plot=False, resume=True)
    run_experiment(_config(2), out, plot=False)
    with pytest.raises(ConfigError, match=r"complete \(2 rounds\).*larger run.rounds"):
        run_experiment(_config(2), out, plot=False, resume=True)
    changed = _config(3)
    changed = changed.replace("algorithm", lr=0.2)
    with pytest.raises(ConfigError, match="made under another config"):
        run_experiment(changed, out, plot=False, resume=True)
    (out / "checkpoint.safetensors").write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="checkpoint cannot be read"):
        run_experiment(_config(3), out, plot=False, resume=True)
    dp = {"privacy": {"mode": "central", "clip": 1.0, "noise_multiplier": 1.0, "sampling": "fixed"}}
    with pytest.raises(ConfigError, match="privacy accountant"):
        run_experiment(_config(3, **dp), tmp_path / "dp", plot=False, resume=True)


def test_the_cli_refuses_resume_with_overwrite(tmp_path, capsys):
    from hamrah.cli import main

    cfg = tmp_path / "c.toml"
    cfg.write_text('[data]\ndataset = "mnist"\nnum_clients = 20\n[model]\nname = "logreg"\n[run]\nrounds = 1\n')
    assert main(["run", str(cfg), "--out", str(tmp_path / "o"), "--resume", "--overwrite"]) == 2
    assert "expected one of the two" in capsys.readouterr().err


def test_a_run_stopped_at_its_target_checkpoints_the_round_it_stopped_at(tmp_path):
    raw = _config(40).to_dict()
    raw["run"].update(checkpoint_every=10, target_accuracy=0.5, stop_at_target=True)
    summary = run_experiment(from_dict(raw), tmp_path / "run", plot=False)
    assert summary["rounds_run"] < 10  # stopped early, before the first regular checkpoint
    meta = json.loads((tmp_path / "run" / "checkpoint.json").read_text())
    assert meta["round"] == summary["rounds_run"]
    saved = load_file(str(tmp_path / "run" / "checkpoint.safetensors"))
    final = load_file(str(tmp_path / "run" / "model.safetensors"))
    assert all(torch.equal(saved[f"params/{k}"], v) for k, v in final.items())
