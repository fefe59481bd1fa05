"""Start-up: a run imports only what it uses (checked in a fresh interpreter, not this test process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# A tiny FedAvg run through the same entry points as `hamrah run`, then the heavy modules it loaded.
SCRIPT = """
import json, sys
from hamrah.experiments.config import from_dict
from hamrah.experiments.runner import prepare, run_experiment
cfg = from_dict({
    "data": {"dataset": "mnist", "partition": "iid", "num_clients": 20},
    "model": {"name": "2nn"},
    "algorithm": {"name": "fedavg", "client_fraction": 0.1, "local_epochs": 1, "batch_size": 50, "lr": 0.1},
    "run": {"rounds": 2, "eval_every": 2, "seed": 0},
})
heavy = ("matplotlib", "grpc", "ray", "dp_accounting", "tenseal", "phe", "scipy")
loaded = lambda: sorted(m for m in heavy if m in sys.modules)
summary = run_experiment(cfg, sys.argv[1], plot=False)
after_run = loaded()
from hamrah.experiments.plots import plot_curves
after_import = loaded()
plot_curves({"run": ([1, 2], [0.5, 0.6])}, sys.argv[1] + "/curve.png")
print(json.dumps({"accuracy": summary["final_accuracy"], "after_run": after_run, "after_plots_import": after_import,
                  "after_plot": loaded()}))
"""


def _run(tmp_path: Path) -> dict:
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "xdg"), "PYTHONPATH": str(ROOT / "src")}
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "run")],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_a_run_without_plots_imports_neither_matplotlib_nor_grpc(tmp_path):
    """A FedAvg run through the runner (``hamrah run --no-plot``) loads no plotting, networking, Ray,
    DP or HE library; importing the plots module loads nothing either; drawing a plot does load
    matplotlib (so the check is not vacuous). (That the pipeline's stages load dp_accounting, tenseal
    and phe only when a run uses them is the pipeline package's lazy registry, tested there.)
    """
    res = _run(tmp_path)
    assert res["accuracy"] > 0.1
    assert not res["after_run"], res["after_run"]
    assert "matplotlib" not in res["after_plots_import"]
    assert "matplotlib" in res["after_plot"]
    assert (tmp_path / "run" / "summary.json").is_file()


def test_cli_no_plot_writes_the_results_but_no_curve(tmp_path):
    """``hamrah run --no-plot`` writes metrics.jsonl and summary.json, and no curve.png; without it, the curve."""
    from hamrah.cli import main

    cfg = tmp_path / "tiny.toml"
    cfg.write_text(
        '[data]\ndataset = "mnist"\npartition = "iid"\nnum_clients = 10\n[model]\nname = "logreg"\n'
        '[algorithm]\nname = "fedavg"\nclient_fraction = 0.2\nlocal_epochs = 1\nbatch_size = 100\nlr = 0.1\n'
        "[run]\nrounds = 1\nseed = 0\n"
    )
    for flag, out in ((["--no-plot"], tmp_path / "a"), ([], tmp_path / "b")):
        assert main(["run", str(cfg), "--out", str(out), "--quiet", *flag]) == 0
        assert (out / "summary.json").is_file() and (out / "metrics.jsonl").is_file()
        assert (out / "curve.png").exists() == (not flag)
