"""``[task]`` in a config: a user's task by import path (beside the config), a built-in by name, and one
clear line for each mistake."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

import hamrah
from hamrah.core.errors import ConfigError, DataError
from hamrah.experiments.config import from_dict, load_config
from hamrah.experiments.runner import prepare, run_experiment

ROOT = Path(__file__).resolve().parents[2]
BREAST = ROOT / "data" / "tabular" / "breast_homo"

TASK = f'''
from torch import nn
import hamrah
from hamrah.data import Field, Schema

class Tab(hamrah.BinaryTask):
    def __init__(self, label="y", schema=None):
        self.label = label
        if schema == "wrong":
            self.schema = Schema((Field("x0", "float32"), Field("nope", "float32"), Field("y", "int64")), label="y")
    def model(self):
        return nn.Sequential(nn.Linear(30, 4), nn.ReLU(), nn.Linear(4, 2))
    def data(self):
        files = [r"{BREAST / "breast_homo_guest.csv.gz"}", r"{BREAST / "breast_homo_host.csv.gz"}"]
        return self.read_tables(files, r"{BREAST / "breast_homo_test.csv.gz"}", label=self.label,
                                features=None if self.schema else [f"x{{i}}" for i in range(30)])

class Reg(hamrah.RegressionTask):  # x0 from the other 29 features: no accuracy, MSE and MAE
    def model(self):
        return nn.Sequential(nn.Linear(29, 1))
    def data(self):
        files = [r"{BREAST / "breast_homo_guest.csv.gz"}", r"{BREAST / "breast_homo_host.csv.gz"}"]
        return self.read_tables(files, r"{BREAST / "breast_homo_test.csv.gz"}", label="x0",
                                features=[f"x{{i}}" for i in range(1, 30)])

class NoModel(hamrah.BinaryTask):
    def data(self):
        return None

instance = Tab()
not_a_task = 42
'''


def _config(tmp_path: Path, module: str, entry: str, workers: int = 1, **kwargs) -> Path:
    (tmp_path / f"{module}.py").write_text(TASK if module == "tab_task" else module_source(module))
    kw = ", ".join(f"{k} = {v!r}".replace("'", '"') for k, v in kwargs.items())
    cfg = tmp_path / "run.toml"
    cfg.write_text(
        textwrap.dedent(f"""
        [task]
        entry = "{entry}"
        kwargs = {{ {kw} }}
        [data]
        partition = "natural"
        num_clients = 0
        [algorithm]
        client_fraction = 1.0
        [run]
        rounds = 1
        workers = {workers}
        """)
    )
    return cfg


def module_source(module: str) -> str:
    return {"broken_task": "raise RuntimeError('no GPU here')\n"}[module]


@pytest.fixture(autouse=True)
def _clean_modules():
    yield
    for name in ("tab_task", "broken_task"):
        sys.modules.pop(name, None)


def test_an_entry_beside_the_config_imports_and_prepares(tmp_path):
    prep = prepare(load_config(_config(tmp_path, "tab_task", "tab_task:Tab")))
    assert prep.task.task_name == "Tab" and prep.data.num_clients == 2 and len(prep.data.dataset.test) == 114


def test_an_instance_and_a_py_suffix_are_accepted(tmp_path):
    cfg = load_config(_config(tmp_path, "tab_task", "tab_task.py:instance"))
    assert type(prepare(cfg).task).__name__ == "Tab"


@pytest.mark.parametrize(
    ("module", "entry", "kwargs", "message"),
    [
        ("tab_task", "missing_module:Tab", {}, r"no module 'missing_module' \(looked in"),
        ("broken_task", "broken_task:Tab", {}, "importing 'broken_task' failed: RuntimeError: no GPU here"),
        ("tab_task", "tab_task:Nope", {}, "module 'tab_task' has no attribute 'Nope'"),
        ("tab_task", "tab_task:not_a_task", {}, "is of type int, expected a hamrah.Task"),
        ("tab_task", "tab_task:NoModel", {}, r"does not define model\(\)"),
        ("tab_task", "tab_task:Tab", {"depth": 3}, "task.kwargs do not fit"),
        ("tab_task", "tab_task", {}, "expected 'module:attribute'"),
    ],
)
def test_each_entry_mistake_is_one_config_error(tmp_path, module, entry, kwargs, message):
    with pytest.raises(ConfigError, match=message) as err:
        prepare(load_config(_config(tmp_path, module, entry, **kwargs)))
    assert "\n" not in str(err.value)


def test_a_missing_label_column_and_a_schema_mismatch_are_data_errors(tmp_path):
    with pytest.raises(DataError, match="no label column 'diagnosis'"):
        prepare(load_config(_config(tmp_path, "tab_task", "tab_task:Tab", label="diagnosis")))
    sys.modules.pop("tab_task", None)
    with pytest.raises(DataError, match="nope"):
        prepare(load_config(_config(tmp_path, "tab_task", "tab_task:Tab", schema="wrong")))


def test_task_name_is_the_builtin_model_and_entry_xor_name():
    cfg = from_dict({"task": {"name": "logreg"}, "data": {"dataset": "synthetic_iid", "num_clients": 5}})
    assert cfg.model.name == "logreg"
    with pytest.raises(ConfigError, match="exactly one of entry"):
        from_dict({"task": {"name": "2nn", "entry": "a:b"}})
    with pytest.raises(ConfigError, match="expected one name"):
        from_dict({"task": {"name": "2nn"}, "model": {"name": "cnn"}})
    with pytest.raises(ConfigError, match="expected a table"):
        from_dict({"task": {"entry": "a:b", "kwargs": 3}})


def _cli_run(tmp_path: Path, cfg: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"}
    return subprocess.run(
        [sys.executable, "-m", "hamrah.cli", "run", str(cfg), "--out", str(tmp_path / "out"), "--no-plot"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )


def test_the_cli_prints_one_line_for_a_bad_entry(tmp_path):
    proc = _cli_run(tmp_path, _config(tmp_path, "tab_task", "tab_task:Nope"))
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines() == [
        "hamrah: error: task.entry = 'tab_task:Nope': module 'tab_task' has no attribute 'Nope'"
    ]
    assert not (tmp_path / "out").exists()


def test_a_regression_task_runs_from_the_cli_and_reports_its_own_metrics(tmp_path):
    """No accuracy: the round log, the done line and summary.json carry the test loss, MSE and MAE."""
    proc = _cli_run(tmp_path, _config(tmp_path, "tab_task", "tab_task:Reg"))
    assert proc.returncode == 0, proc.stderr
    assert "round    1: test loss " in proc.stdout and "  mse " in proc.stdout and "  mae " in proc.stdout
    assert "final test loss " in proc.stdout and "accuracy" not in proc.stdout
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["final_accuracy"] is None and summary["final_mse"] == pytest.approx(summary["final_loss"])
    assert summary["final_mae"] > 0


def test_a_user_task_trains_in_worker_processes(tmp_path):
    """Worker processes get the task's data set by pickling it, its training Examples included."""
    cfg = load_config(_config(tmp_path, "tab_task", "tab_task:Tab", workers=2))
    summary = run_experiment(cfg, tmp_path / "out", plot=False)
    assert summary["workers"] == 2 and summary["final_accuracy"] > 0.5 and summary["final_auc"] > 0.5


def test_a_task_class_of_the_running_script_runs_from_python(monkeypatch):
    """docs/tasks.md "From Python": ``entry = "__main__:Cls"`` names a class of the script being run."""
    from hamrah.data import ArrayData, Dataset

    class Line(hamrah.RegressionTask):
        def model(self):
            return nn.Linear(3, 1)

        def data(self):
            x = torch.randn(400, 3, generator=torch.Generator().manual_seed(0))
            y = x @ torch.tensor([1.0, -2.0, 0.5]) + 0.3
            return Dataset("line", ArrayData(x[:300], y[:300]), ArrayData(x[300:], y[300:]), 0)

    monkeypatch.setattr(sys.modules["__main__"], "Line", Line, raising=False)
    cfg = from_dict(
        {
            "task": {"entry": "__main__:Line"},
            "data": {"partition": "iid", "num_clients": 4},
            "algorithm": {"client_fraction": 1.0, "batch_size": 10, "lr": 0.05},
            "run": {"rounds": 5},
        }
    )
    summary = run_experiment(cfg, None)
    assert summary["final_accuracy"] is None and summary["final_mse"] < 0.05


def test_each_config_folder_gets_its_own_module_of_a_shared_name(tmp_path):
    # Two projects in one process (a notebook, a test run) whose task modules share a name: each
    # config's folder imports its own, never the one imported first from the other folder.
    import sys

    from hamrah import load_task

    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "shared_task.py").write_text(
            "import hamrah\nclass T(hamrah.ClassificationTask):\n"
            f"    name = 'task_{name}'\n    def model(self): ...\n    def data(self): ...\n"
        )
    try:
        assert load_task("shared_task:T", folder=tmp_path / "a").task_name == "task_a"
        assert load_task("shared_task:T", folder=tmp_path / "b").task_name == "task_b"
        assert load_task("shared_task:T", folder=tmp_path / "a").task_name == "task_a"
    finally:
        sys.modules.pop("shared_task", None)
        for name in ("a", "b"):
            if str(tmp_path / name) in sys.path:
                sys.path.remove(str(tmp_path / name))
