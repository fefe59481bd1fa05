"""The ``hamrah`` command: run, sweep and partition on a small config; user errors exit 2 without a
traceback and without creating the output folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hamrah.cli import main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

SMALL = """\
[data]
dataset = "mnist"
partition = "iid"
num_clients = 10
[model]
name = "logreg"
[algorithm]
name = "fedavg"
client_fraction = 0.2
local_epochs = 1
batch_size = 50
lr = 0.1
[run]
rounds = 3
target_accuracy = 0.5
eval_every = 1
seed = 0
"""


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a default runs/ folder would land here, not in the repo
    monkeypatch.delenv("HAMRAH_DATA", raising=False)


def _config(tmp_path: Path, text: str = SMALL, name: str = "small.toml") -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def _check_run_folder(out: Path, rounds: int) -> dict:
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == rounds
    recs = [json.loads(line) for line in lines]
    assert [r["round"] for r in recs] == list(range(1, rounds + 1))
    for r in recs:
        assert {"round", "test_accuracy", "test_loss", "elapsed_s"} <= set(r)
        assert 0.0 <= r["test_accuracy"] <= 1.0 and r["test_loss"] > 0
    summary = json.loads((out / "summary.json").read_text())
    assert {"config", "num_parameters", "final_accuracy", "best_accuracy", "rounds_to_target", "wall_s"} <= set(summary)
    assert summary["num_parameters"] == 7_850
    assert summary["config"]["model"]["name"] == "logreg" and summary["config"]["run"]["rounds"] == 3
    assert summary["final_accuracy"] == pytest.approx(recs[-1]["test_accuracy"])
    assert summary["best_accuracy"] == pytest.approx(max(r["test_accuracy"] for r in recs))
    assert summary["final_accuracy"] > 0.5
    assert 1.0 <= summary["rounds_to_target"] <= rounds
    assert (out / "curve.png").read_bytes()[:8] == PNG_MAGIC
    return summary


def test_run_in_process(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["run", str(_config(tmp_path)), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "round    1" in captured.out and "done" in captured.out
    assert "Traceback" not in captured.err
    _check_run_folder(out, 3)


def test_run_stop_at_target_and_rounds_override(tmp_path, capsys):
    out = tmp_path / "stop"
    assert main(["run", str(_config(tmp_path)), "--out", str(out), "--rounds", "8", "--stop-at-target", "--quiet"]) == 0
    capsys.readouterr()
    lines = (out / "metrics.jsonl").read_text().splitlines()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["run"]["rounds"] == 8 and summary["config"]["run"]["stop_at_target"] is True
    assert 1 <= len(lines) < 8  # logreg passes 50% within a round or two
    assert json.loads(lines[-1])["test_accuracy"] >= 0.5


def test_run_subprocess(tmp_path):
    out = tmp_path / "sub_out"
    env = {k: v for k, v in os.environ.items() if k != "HAMRAH_DATA"}
    proc = subprocess.run(
        [sys.executable, "-m", "hamrah.cli", "run", str(_config(tmp_path)), "--out", str(out), "--quiet"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    _check_run_folder(out, 3)


BAD = [
    (SMALL.replace("local_epochs = 1", "local_epoch = 1"), ["local_epoch", "did you mean 'local_epochs'"]),
    (SMALL.replace("rounds = 3", 'rounds = "three"'), ["run.rounds", "expected an integer"]),
    (SMALL.replace('name = "logreg"', 'name = "vgg"'), ["model.name", "'vgg'"]),
    # Errors only found once the data is loaded are also reported before anything is written.
    (SMALL.replace('name = "logreg"', 'name = "char_lstm"'), ["char_lstm", "mnist"]),
    (SMALL.replace('partition = "iid"', 'partition = "shards"\nshards_per_client = 7000'), ["data.shards_per_client"]),
]


@pytest.mark.parametrize("text, parts", BAD, ids=["unknown-key", "wrong-type", "unknown-model", "model-data", "shards"])
def test_bad_config_in_process(tmp_path, capsys, text, parts):
    out = tmp_path / "never"
    assert main(["run", str(_config(tmp_path, text)), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hamrah: error: ")
    for p in parts:
        assert p in err
    assert "Traceback" not in err
    assert not out.exists()


def test_bad_config_subprocess(tmp_path):
    out = tmp_path / "never"
    cfg = _config(tmp_path, BAD[1][0])
    proc = subprocess.run(
        [sys.executable, "-m", "hamrah.cli", "run", str(cfg), "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "run.rounds" in proc.stderr and str(cfg) in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists()


def test_missing_config_exits_2(tmp_path, capsys):
    assert main(["run", str(tmp_path / "absent.toml"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "absent.toml" in err and "not found" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_sweep(tmp_path, capsys):
    out = tmp_path / "sweep"
    assert main(["sweep", str(_config(tmp_path)), "--lrs", "0.05,0.1", "--rounds", "2", "--out", str(out)]) == 0
    capsys.readouterr()
    payload = json.loads((out / "sweep.json").read_text())
    assert [p["lr"] for p in payload["points"]] == [0.05, 0.1]
    assert payload["best_lr"] in (0.05, 0.1)
    assert payload["config"]["sweep"]["lrs"] == [0.05, 0.1]
    for p in payload["points"]:
        assert p["rounds_run"] == 2 and 0.0 < p["best_accuracy"] <= 1.0
    assert (out / "sweep.png").read_bytes()[:8] == PNG_MAGIC
    for lr in ("0.05", "0.1"):
        assert len((out / f"lr_{lr}" / "metrics.jsonl").read_text().splitlines()) == 2


def test_partition_prints_json(tmp_path, capsys):
    assert main(["partition", str(_config(tmp_path))]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["num_clients"] == 10 and stats["examples_total"] == 60_000
    assert stats["examples_per_client"]["min"] == stats["examples_per_client"]["max"] == 6000
    assert stats["labels_per_client"]["min"] == 10
    assert not (tmp_path / "runs").exists()


def test_config_data_path_without_mnist_is_an_error(tmp_path, capsys):
    empty = tmp_path / "no_mnist_here"
    empty.mkdir()
    cfg = _config(tmp_path, SMALL.replace("num_clients = 10", f"num_clients = 10\npath = {str(empty)!r}"))
    assert main(["partition", str(cfg)]) == 2
    assert str(empty) in capsys.readouterr().err


def test_the_console_entry_exits_with_mains_code_after_freezing_the_collector(monkeypatch):
    import hamrah.cli as cli

    calls = []
    monkeypatch.setattr(cli, "main", lambda: calls.append("main") or 3)
    monkeypatch.setattr(cli.gc, "freeze", lambda: calls.append("freeze"))
    with pytest.raises(SystemExit) as exc:
        cli.entry()
    assert exc.value.code == 3 and calls == ["main", "freeze"]
