"""The hospital walk-through of docs/tasks.md: a user task in examples/hospital, run by `hamrah run`,
saved as safetensors + manifest, scored by `hamrah evaluate`, used by `hamrah predict`, and loaded back
into the user's own module in three lines. Also: `hamrah run` refuses to overwrite a previous run."""

from __future__ import annotations

import csv
import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hamrah.core.errors import ConfigError
from hamrah.experiments.export import read_model
from hamrah.task import BinaryTask

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "hospital"
CONFIG = EXAMPLE / "hospital.toml"


def _hamrah(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"}
    return subprocess.run(
        [sys.executable, "-m", "hamrah.cli", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=600
    )


def _user_lines(path: Path) -> int:
    return sum(1 for line in path.read_text().splitlines() if line.strip() and not line.strip().startswith("#"))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("hospital") / "run"
    proc = _hamrah("run", str(CONFIG), "--out", str(out), "--quiet", "--no-plot", cwd=out.parent)
    assert proc.returncode == 0, proc.stderr
    return out


def test_the_example_is_at_most_40_lines_of_user_code():
    assert _user_lines(EXAMPLE / "hospital_task.py") + _user_lines(CONFIG) <= 40


def test_the_run_writes_the_model_and_its_manifest(run_dir):
    manifest = json.loads((run_dir / "manifest.json").read_text())
    summary = json.loads((run_dir / "summary.json").read_text())
    assert manifest["task"] == "hospital" and manifest["task_version"] == "1"
    assert manifest["task_digest"].startswith("1-") and len(manifest["config_digest"]) == 64
    assert manifest["metrics"]["accuracy"] == summary["final_accuracy"] >= 0.9
    assert 0.9 <= manifest["metrics"]["auc"] <= 1.0


def test_the_model_loads_into_the_users_module_in_three_lines(run_dir, monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLE))
    from hospital_task import Hospital
    from safetensors.torch import load_file

    model = Hospital().model()
    model.load_state_dict(load_file(str(run_dir / "model.safetensors")))

    test = Hospital().data().test
    accuracy = float((model(test.x).argmax(1) == test.y).float().mean())
    assert accuracy == pytest.approx(json.loads((run_dir / "manifest.json").read_text())["metrics"]["accuracy"])


def test_evaluate_scores_the_saved_model_like_the_run(run_dir):
    proc = _hamrah("evaluate", "--model", str(run_dir), "--config", str(CONFIG), cwd=run_dir)
    assert proc.returncode == 0, proc.stderr
    scored = json.loads(proc.stdout)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert scored["test_examples"] == 114
    for name in ("accuracy", "loss", "auc"):
        assert scored[name] == pytest.approx(manifest["metrics"][name])


def test_predict_writes_one_row_per_input_row(run_dir, tmp_path):
    with gzip.open(ROOT / "data/tabular/breast_homo/breast_homo_test.csv.gz", "rt") as f:
        rows = list(csv.reader(f))
    source = tmp_path / "patients.csv"
    with open(source, "w", newline="") as f:  # no label column: a new patient's record
        csv.writer(f).writerows([[c for i, c in enumerate(r) if i != 1] for r in rows[:21]])
    out = tmp_path / "pred.csv"
    proc = _hamrah(
        "predict",
        "--model",
        str(run_dir),
        "--config",
        str(CONFIG),
        "--csv",
        str(source),
        "--output",
        str(out),
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    got = list(csv.DictReader(open(out)))
    assert len(got) == 20 and set(got[0]) == {"row", "prediction", "score"}
    x = torch.tensor([[float(v) for v in r[2:]] for r in rows[1:21]])
    model, _ = read_model(run_dir, _hospital())
    with torch.no_grad():
        expected = torch.softmax(model(x), 1)[:, 1]
    assert [float(r["score"]) for r in got] == pytest.approx(expected.tolist(), rel=1e-5)
    assert [int(r["prediction"]) for r in got] == [int(p > 0.5) for p in expected]


def _hospital():
    sys.path.insert(0, str(EXAMPLE))
    try:
        from hospital_task import Hospital
    finally:
        sys.path.remove(str(EXAMPLE))
    return Hospital()


def test_a_previous_run_is_not_overwritten_without_overwrite(run_dir):
    before = (run_dir / "model.safetensors").read_bytes()
    proc = _hamrah("run", str(CONFIG), "--out", str(run_dir), "--quiet", "--no-plot", cwd=run_dir)
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines() == [
        f"hamrah: error: {run_dir} holds a previous run; pass --resume to go on from its checkpoint, "
        "--overwrite to replace it, or choose another --out"
    ]
    assert (run_dir / "model.safetensors").read_bytes() == before
    proc = _hamrah(
        "run", str(CONFIG), "--out", str(run_dir), "--quiet", "--no-plot", "--overwrite", "--rounds", "2", cwd=run_dir
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads((run_dir / "summary.json").read_text())["rounds_run"] == 2


def test_read_model_refuses_another_task_and_an_empty_folder(run_dir, tmp_path):
    class Other(BinaryTask):
        name = "other"

        def model(self):
            return torch.nn.Linear(30, 2)

        def data(self):
            raise NotImplementedError

    with pytest.raises(ConfigError, match="the model is of task 'hospital'"):
        read_model(run_dir, Other())
    with pytest.raises(ConfigError, match="expected the --out folder of a run"):
        read_model(tmp_path, Other())

    class Hospital(Other):
        name = "hospital"

    with pytest.raises(ConfigError, match="does not fit task hospital's model"):
        read_model(run_dir, Hospital())
