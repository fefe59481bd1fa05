"""The example projects under examples/ (issue 14, item 7): each imports only hamrah's public API, trains through
`hamrah run` to a finite metric above chance, and its comparison script (federated / central / alone) works.

The full comparisons take minutes (their READMEs give the commands); these runs are 1-2 rounds."""

from __future__ import annotations

import ast
import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

import hamrah
import hamrah.data
import hamrah.task
import hamrah.vertical

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
PUBLIC = {"hamrah": hamrah, "hamrah.data": hamrah.data, "hamrah.task": hamrah.task, "hamrah.vertical": hamrah.vertical}


def _private_uses(source: str) -> list[str]:
    """Return every use of hamrah in ``source`` outside its public packages' ``__all__``."""
    bad = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            bad += [a.name for a in node.names if a.name.split(".")[0] == "hamrah" and a.name not in PUBLIC]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "hamrah":
            if node.module not in PUBLIC:
                bad.append(node.module)
            else:
                bad += [f"{node.module}.{a.name}" for a in node.names if a.name not in PUBLIC[node.module].__all__]
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "hamrah":
            if node.attr not in hamrah.__all__ and node.attr not in ("data", "task", "vertical"):
                bad.append(f"hamrah.{node.attr}")
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute):
            inner = node.value
            package = f"hamrah.{inner.attr}" if isinstance(inner.value, ast.Name) and inner.value.id == "hamrah" else ""
            if package in PUBLIC and node.attr not in PUBLIC[package].__all__:
                bad.append(f"{package}.{node.attr}")
    return bad


def _hamrah(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "hamrah.cli", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=600
    )


def _example(name: str, monkeypatch):
    """Import examples/<name>'s modules (and examples/fedcompare.py) as a user would: from their folders."""
    monkeypatch.syspath_prepend(str(EXAMPLES))
    monkeypatch.syspath_prepend(str(EXAMPLES / name))


def _compare(name: str):
    """Import examples/<name>/compare.py under a name of its own (every example has a compare.py)."""
    spec = importlib.util.spec_from_file_location(f"compare_{name}", EXAMPLES / name / "compare.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _config(src: Path, dest: Path, **changes) -> Path:
    """Write ``src`` with tables updated by ``changes`` (``task={"kwargs": {...}}``) to ``dest``."""
    import fedcompare

    cfg = fedcompare.read_config(src)
    for table, values in changes.items():
        cfg.setdefault(table, {}).update(values)
    dest.write_text(fedcompare.toml_dumps(cfg))
    return dest


def test_every_example_imports_only_the_public_api():
    files = sorted(EXAMPLES.rglob("*.py"))
    assert {f.parent.name for f in files} >= {"examples", "hospital", "intrusion", "credit", "keyboard", "bank_shop"}
    for f in files:
        assert _private_uses(f.read_text()) == [], f
    # the check itself catches a private import, a private attribute and a name a package does not export
    assert _private_uses("from hamrah.data.shakespeare import encode\nimport hamrah.experiments.runner") == [
        "hamrah.data.shakespeare",
        "hamrah.experiments.runner",
    ]
    assert sorted(_private_uses("import hamrah\nhamrah.core.metrics\nhamrah.data.load_leaf")) == [
        "hamrah.core",
        "hamrah.data.load_leaf",
    ]
    assert _private_uses("from hamrah.task import builtin_task, nope") == ["hamrah.task.nope"]


def test_alone_keeps_one_natural_client_and_the_test_set(monkeypatch):
    _example("hospital", monkeypatch)
    import fedcompare

    folder = str(EXAMPLES / "hospital")
    task = fedcompare.alone("hospital_task:Hospital", folder, "breast_homo_host", {"hidden": 8})
    ds = hamrah.task.task_dataset(task)
    assert len(ds.train) == 228 and len(ds.test) == 114 and ds.group_names == ("breast_homo_host",)
    assert task.task_name == "hospital" and task.model()[0].out_features == 8
    with pytest.raises(ValueError, match="no natural client 'nope'"):
        hamrah.task.task_dataset(fedcompare.alone("hospital_task:Hospital", folder, "nope"))
    cfg = fedcompare.read_config(EXAMPLES / "hospital" / "hospital.toml")
    assert fedcompare.client_names(cfg) == ["breast_homo_guest", "breast_homo_host"]
    pooled = fedcompare.central(cfg)
    assert pooled["data"]["partition"] == "iid" and pooled["data"]["num_clients"] == 1
    assert fedcompare.tomllib.loads(fedcompare.toml_dumps(pooled)) == pooled


def test_hospital_comparison_writes_every_setting(monkeypatch, tmp_path):
    _example("hospital", monkeypatch)
    monkeypatch.setenv("PYTHONPATH", f"{ROOT / 'src'}{os.pathsep}{ROOT}")
    report = _compare("hospital").main(rounds=2, seeds=(0,), out=tmp_path / "runs", results=tmp_path / "results")
    saved = json.loads((tmp_path / "results" / "comparison.json").read_text())
    assert saved == json.loads(json.dumps(report))
    names = [r["setting"] for r in saved["rows"]]
    assert names == [
        "federated (2 hospitals)",
        "central (pooled)",
        "alone: breast_homo_guest",
        "alone: breast_homo_host",
        "federated + DP-SGD (per patient, delta 1e-4)",
    ]
    for row in saved["rows"]:
        assert 0.8 < row["auc"] <= 1.0 and 0.6 < row["accuracy"] <= 1.0
        assert ("epsilon" in row) == ("DP-SGD" in row["setting"])  # only the DP-SGD run spends privacy
    assert 0 < saved["rows"][-1]["epsilon"] < 10


def test_intrusion_is_non_iid_and_detects_attacks(monkeypatch, tmp_path):
    _example("intrusion", monkeypatch)
    import numpy as np
    from intrusion_task import CLASSES, FAMILY, ORGANISATIONS, Intrusion, read_kdd

    train, test = Intrusion().data()
    assert (len(train), len(test)) == (25192, 22544) and len(read_kdd("KDDTest+", hardest=True)) == 11850
    for k, family in enumerate(CLASSES[1:], start=1):  # ~90% of each family's records are at its organisations
        home = [g for g, org in enumerate(train.group_names) if family in ORGANISATIONS[org]]
        assert np.isin(train.groups[train.labels == k], home).mean() > 0.85, family
    assert set(FAMILY.values()) == set(CLASSES)

    proc = _hamrah("run", str(EXAMPLES / "intrusion" / "intrusion.toml"), "--out", "run", "--rounds", "2", "--quiet",
                   "--no-plot", cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    rates = _compare("intrusion").scorer(64)(
        {"run_dir": str(tmp_path / "run"), "metrics": _manifest(tmp_path / "run")["metrics"]}
    )
    assert rates["KDDTest+ accuracy"] > 0.6  # "normal" for everything scores 0.43
    assert rates["KDDTest+ any attack DR"] > 0.4 and rates["KDDTest+ any attack FPR"] < 0.2
    assert 0 < rates["KDDTest-21 accuracy"] < rates["KDDTest+ accuracy"]


def _manifest(run: Path) -> dict:
    return json.loads((run / "manifest.json").read_text())


def test_credit_trains_to_an_auc_above_chance(tmp_path):
    proc = _hamrah("run", str(EXAMPLES / "credit" / "credit.toml"), "--out", "run", "--rounds", "2", "--quiet",
                   "--no-plot", cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    metrics = _manifest(tmp_path / "run")["metrics"]
    assert 0.65 < metrics["auc"] <= 1.0 and math.isfinite(metrics["loss"])


def test_keyboard_predicts_above_chance_and_its_dp_run_reports_epsilon(monkeypatch, tmp_path):
    _example("keyboard", monkeypatch)
    small = {"task": {"kwargs": {"vocab": 500, "embed": 16, "hidden": 16, "length": 20, "test_every": 20}}}
    small["algorithm"] = {"client_fraction": 0.03}
    plain = _config(EXAMPLES / "keyboard" / "keyboard.toml", tmp_path / "plain.toml", **small)
    proc = _hamrah("run", str(plain), "--out", "plain", "--rounds", "2", "--quiet", "--no-plot", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    metrics = _manifest(tmp_path / "plain")["metrics"]
    # chance is 1 / 502; 2 small rounds reach about the most-frequent-word level (0.04)
    assert 0.03 < metrics["accuracy"] < metrics["top3"] < 1 and math.isfinite(metrics["perplexity"])

    private = _config(EXAMPLES / "keyboard" / "keyboard_dp.toml", tmp_path / "dp.toml", **small)
    proc = _hamrah("run", str(private), "--out", "dp", "--rounds", "2", "--quiet", "--no-plot", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "dp" / "summary.json").read_text())
    assert 0 < summary["epsilon"] <= 10.0 and summary["delta"] <= 1e-8 and summary["noise_multiplier"] > 0


def test_the_committed_keyboard_results_meet_the_privacy_target():
    report = json.loads((EXAMPLES / "keyboard" / "results" / "comparison.json").read_text())
    dp = [r for r in report["rows"] if "epsilon" in r]
    assert dp and all(0 < r["epsilon"] <= 10.0 and r["delta"] <= 1e-8 for r in dp)


@pytest.mark.parametrize("name", ["hospital", "credit", "intrusion", "keyboard"])
def test_every_example_server_config_sets_up_a_server(name):
    """Each example's server config loads the user's task as the server runs it: the plan names the task
    (not a built-in), and a cross-silo config's sites are the task's natural clients."""
    from hamrah.experiments.serve import load_server_config, server_setup

    (path,) = (ROOT / "examples" / name).glob("*_server.toml")
    exp, srv = load_server_config(path)
    setup = server_setup(exp, srv)
    assert setup.task_ref is not None and not setup.task_ref.builtin and setup.model is None
    assert setup.task_ref.digest == setup.task.digest()
    if srv.cross_silo:
        assert setup.goal == srv.sites
        from hamrah.experiments.runner import prepare

        assert prepare(exp).data.num_clients == srv.sites
