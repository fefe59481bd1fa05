"""``hamrah predict`` writes the class names of a task trained on text labels, not their codes, each
class's probability, and copies the columns ``--keep`` names (an id) beside each row's prediction."""

from __future__ import annotations

import csv
import sys

import numpy as np
import pytest

from hamrah.cli import main
from hamrah.experiments import from_dict, run_experiment

TASK = """
from torch import nn
import hamrah

class Pets(hamrah.ClassificationTask):
    def model(self):
        return nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 3))
    def data(self):
        return self.read_tables(["a.csv", "b.csv"], "test.csv", label="kind")
"""


def _table(path, rng, n):
    kinds = ["cat", "dog", "fish"]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["w", "h", "kind"])
        for _ in range(n):
            k = int(rng.integers(3))
            w.writerow([k + rng.normal(0, 0.1), -k + rng.normal(0, 0.1), kinds[k]])


def test_predictions_are_the_class_names(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    for name, n in (("a.csv", 60), ("b.csv", 60), ("test.csv", 30)):
        _table(tmp_path / name, rng, n)
    (tmp_path / "pets_task.py").write_text(TASK)
    raw = {
        "task": {"entry": "pets_task:Pets"},
        "data": {"partition": "natural", "num_clients": 0},
        "algorithm": {"client_fraction": 1.0, "local_epochs": 5, "batch_size": 10, "lr": 0.2},
        "run": {"rounds": 5},
    }
    try:
        run_experiment(from_dict(raw, base=tmp_path), tmp_path / "run", plot=False)
        (tmp_path / "pets.toml").write_text(
            '[task]\nentry = "pets_task:Pets"\n[data]\npartition = "natural"\nnum_clients = 0\n'
        )
        argv = ["predict", "--model", "run", "--config", "pets.toml", "--csv", "test.csv", "--output", "out.csv"]
        assert main([*argv, "--keep", "w"]) == 0
        assert main([*argv, "--keep", "nope"]) == 2
        assert main([*argv, "--keep", "prediction"]) == 2
    finally:
        sys.modules.pop("pets_task", None)
    with open(tmp_path / "out.csv") as f:
        got = list(csv.DictReader(f))
    with open(tmp_path / "test.csv") as f:
        rows = list(csv.DictReader(f))
    truth = [r["kind"] for r in rows]
    assert [r["w"] for r in got] == [r["w"] for r in rows]  # --keep: copied as written
    err = capsys.readouterr().err
    assert "test.csv: no column 'nope' (columns: w, h, kind)" in err
    assert "--keep prediction: the output has a column of that name already" in err
    assert list(got[0]) == ["row", "w", "prediction", "probability_cat", "probability_dog", "probability_fish"]
    assert {r["prediction"] for r in got} <= {"cat", "dog", "fish"}
    assert np.mean([r["prediction"] == t for r, t in zip(got, truth)]) > 0.8
    for r in got:  # the probabilities sum to 1 and the prediction is the most probable class
        p = {k: float(r[f"probability_{k}"]) for k in ("cat", "dog", "fish")}
        assert sum(p.values()) == pytest.approx(1, abs=1e-5) and r["prediction"] == max(p, key=p.get)
