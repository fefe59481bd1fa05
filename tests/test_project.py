"""`hamrah new`: each template's project runs as generated (`hamrah run` on its sim.toml, its own test
file under pytest), its configs parse, its sample data is deterministic, its Python is lint-clean, and
a bad name, an unknown template or a non-empty target folder is refused in one line with nothing written."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hamrah.cli import main
from hamrah.core.errors import ConfigError
from hamrah.project import TEMPLATES, new_project

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"}
FILES = {"README.md", "sim.toml", "server.toml", "device.toml", "data"}
TASK_KIND = {"tabular": "BinaryTask", "image": "ClassificationTask", "text": "NextTokenTask"}


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, env=ENV, cwd=cwd, timeout=300)


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module", params=TEMPLATES)
def project(request, tmp_path_factory) -> tuple[str, Path]:
    template = request.param
    name = f"{template}-proj"  # dashes: the Python name is {template}_proj
    return template, new_project(name, template, tmp_path_factory.mktemp(template))


def test_the_project_holds_the_task_configs_readme_test_and_data(project):
    template, root = project
    ident = root.name.replace("-", "_")
    assert {p.name for p in root.iterdir()} == FILES | {f"{ident}_task.py", f"test_{ident}.py"}
    task_source = (root / f"{ident}_task.py").read_text()
    assert f"(hamrah.{TASK_KIND[template]})" in task_source and "def model(" in task_source
    assert "def data(" in task_source
    sim = tomllib.loads((root / "sim.toml").read_text())
    assert sim["task"]["entry"] == f"{ident}_task:{ident.title().replace('_', '')}"
    assert sum(1 for p in (root / "data").rglob("*") if p.is_file()) >= 4
    readme = (root / "README.md").read_text()
    for command in ("hamrah run sim.toml", "hamrah server --config server.toml", "hamrah evaluate --model"):
        assert command in readme
    assert "{{" not in readme and "{{" not in task_source


def test_hamrah_run_on_the_generated_sim_toml_writes_the_model(project):
    template, root = project
    out = root / "runs" / "two"
    proc = _run([sys.executable, "-m", "hamrah.cli", "run", "sim.toml", "--out", str(out), "--rounds", "2"], root)
    assert proc.returncode == 0, proc.stderr
    assert (out / "model.safetensors").stat().st_size > 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["task"] == root.name.replace("-", "_")
    assert math.isfinite(manifest["metrics"]["accuracy"]) and math.isfinite(manifest["metrics"]["loss"])
    extra = {"tabular": "auc", "image": "accuracy", "text": "perplexity"}[template]
    assert math.isfinite(manifest["metrics"][extra])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rounds_run"] == 2 and summary["num_clients"] == 3


def test_the_generated_test_file_passes_under_pytest(project):
    _, root = project
    test_file = f"test_{root.name.replace('-', '_')}.py"
    proc = _run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test_file], root)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 passed" in proc.stdout


def test_the_generated_python_is_ruff_clean(project):
    _, root = project
    for tool in (["check"], ["format", "--check"]):
        proc = _run([sys.executable, "-m", "ruff", *tool, "--isolated", "--no-cache", "."], root)
        assert proc.returncode == 0, proc.stdout + proc.stderr


def test_server_and_device_configs_name_the_same_task_and_split(project):
    from hamrah.experiments.config import load_config
    from hamrah.experiments.serve import load_server_config

    _, root = project
    sim = load_config(root / "sim.toml")
    exp, srv = load_server_config(root / "server.toml")
    device = load_config(root / "device.toml")
    for cfg in (exp, device):
        assert cfg.task == sim.task and cfg.data == sim.data and cfg.run.seed == sim.run.seed
    assert srv.goal_count == 3 and srv.tls_cert is None


def test_a_device_store_fills_from_device_toml(tmp_path, capsys):
    root = new_project("silo", "tabular", tmp_path)
    store = tmp_path / "client_0.db"
    assert main(["store", "import", "--config", str(root / "device.toml"), "--client", "0", "--store", str(store)]) == 0
    assert capsys.readouterr().out.strip() == f"{store}: 100 examples of client 0"


def test_sample_data_is_the_same_bytes_every_time(tmp_path):
    for template in TEMPLATES:
        a = new_project("one", template, tmp_path / template / "a")
        b = new_project("one", template, tmp_path / template / "b")
        assert _tree(a) == _tree(b)


def test_an_empty_target_folder_is_used_and_dir_is_the_parent(tmp_path, capsys):
    (tmp_path / "proj").mkdir()
    assert main(["new", "proj", "--template", "text", "--dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out.startswith(f"{tmp_path / 'proj'}: a text project.")
    assert (tmp_path / "proj" / "proj_task.py").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["proj"]  # no staging folder left behind


def test_the_next_command_is_quoted_for_a_folder_with_spaces(tmp_path, capsys):
    parent = tmp_path / "my projects"
    parent.mkdir()
    assert main(["new", "demo", "--template", "tabular", "--dir", str(parent)]) == 0
    assert f"Next: cd '{parent / 'demo'}' && hamrah run sim.toml" in capsys.readouterr().out


def _refused(argv: list[str], capsys) -> str:
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hamrah: error: ")
    return lines[0]


def test_a_non_empty_target_folder_is_refused_and_left_as_it_was(tmp_path, capsys):
    (tmp_path / "proj").mkdir()
    (tmp_path / "proj" / "notes.txt").write_text("mine")
    line = _refused(["new", "proj", "--dir", str(tmp_path)], capsys)
    assert line == f"hamrah: error: {tmp_path / 'proj'} already exists and is not empty; choose another name or --dir"
    assert _tree(tmp_path) == {"proj/notes.txt": b"mine"}
    (tmp_path / "file").write_text("x")  # a file of that name is refused too
    assert "already exists" in _refused(["new", "file", "--dir", str(tmp_path)], capsys)


@pytest.mark.parametrize("name", ["1clinic", "my clinic", "a.b", "class", "x/y", "", "caf\u00e9"])
def test_an_invalid_name_is_refused_with_nothing_written(name, tmp_path, capsys):
    line = _refused(["new", name, "--dir", str(tmp_path)], capsys)
    assert line.startswith(f"hamrah: error: project name {name!r}: expected a Python identifier")
    assert list(tmp_path.iterdir()) == []


def test_an_unknown_template_is_refused_naming_the_choices(tmp_path, capsys):
    line = _refused(["new", "proj", "--template", "video", "--dir", str(tmp_path)], capsys)
    assert line == "hamrah: error: template 'video': expected one of tabular, image, text"
    assert list(tmp_path.iterdir()) == []


def test_a_failure_while_writing_leaves_nothing(tmp_path, monkeypatch):
    import hamrah.project as project

    def broken(folder: Path) -> None:
        (folder / "half").mkdir(parents=True)
        raise ConfigError("disk full")

    monkeypatch.setitem(project._SAMPLE_DATA, "tabular", broken)
    with pytest.raises(ConfigError, match="disk full"):
        new_project("proj", "tabular", tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_the_templates_are_package_data():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    globs = config["tool"]["setuptools"]["package-data"]["hamrah"]
    assert "project/templates/**/*" in globs
    templates = ROOT / "src" / "hamrah" / "project" / "templates"
    assert {p.name for p in templates.iterdir()} == {"common", *TEMPLATES}
    assert not list(templates.rglob("*.py")) and not list(templates.rglob("__init__*"))


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_tabular_server_and_device_configs_run_a_federation_as_generated(tmp_path):
    """`hamrah server --config server.toml` and one `hamrah device --config device.toml` per client, as
    subprocesses, train the project's own task for 2 rounds and write its model."""
    root = new_project("clinic", "tabular", tmp_path)
    server_toml = (root / "server.toml").read_text()
    assert "rounds = 10" in server_toml
    (root / "server.toml").write_text(server_toml.replace("rounds = 10", "rounds = 2"))  # only the length
    port = _free_port()
    cli = [sys.executable, "-m", "hamrah.cli"]
    imports = [  # the three sites import their stores side by side, as they would
        subprocess.Popen(
            [
                *cli,
                "store",
                "import",
                "--config",
                "device.toml",
                "--client",
                str(k),
                "--store",
                f"stores/client_{k}.db",
            ],
            cwd=root,
            env=ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for k in range(3)
    ]
    for proc in imports:
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, out
    server = subprocess.Popen(
        [*cli, "server", "--config", "server.toml", "--state", "runs/server", "--port", str(port)],
        cwd=root,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    devices = [
        subprocess.Popen(
            [
                *cli,
                "device",
                "--server",
                f"127.0.0.1:{port}",
                "--store",
                f"stores/client_{k}.db",
                "--config",
                "device.toml",
                "--name",
                f"client-{k}",
                "--assume-eligible",
                "--retry-for",
                "60",
            ],
            cwd=root,
            env=ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for k in range(3)
    ]
    try:
        out, _ = server.communicate(timeout=240)
        logs = [d.communicate(timeout=60)[0] for d in devices]
    finally:
        for p in (server, *devices):
            if p.poll() is None:
                p.kill()
    assert server.returncode == 0, out[-3000:]
    assert "done: 2 rounds committed" in out and "task clinic" in out
    for k, log in enumerate(logs):
        assert f"device client-{k}: task 'clinic' installed" in log, log[-2000:]
        assert "device done: " in log and " 2 reported" in log, log[-2000:]
    rows = [json.loads(line) for line in (root / "runs/server/metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rows] == [1, 2] and all(r["reported"] == 3 for r in rows)
    assert all(0.0 <= r["test_auc"] <= 1.0 for r in rows)  # the task's own metric
    manifest = json.loads((root / "runs/server/manifest.json").read_text())
    assert manifest["task"] == "clinic" and manifest["metrics"]["auc"] == rows[-1]["test_auc"]
    load = "from safetensors.torch import load_file; from clinic_task import Clinic; m = Clinic().model(); "
    load += "m.load_state_dict(load_file('runs/server/model.safetensors')); print('loaded')"
    proc = _run([sys.executable, "-c", load], root)
    assert proc.stdout.strip() == "loaded", proc.stderr


@pytest.mark.parametrize(
    "name, template, cls",
    [
        ("path", "tabular", "PathTask"),  # pathlib's Path in the task module and the test file
        ("DATA", "tabular", "DATATask"),  # the task module's DATA folder
        ("none", "tabular", "NoneTask"),  # a keyword once capitalised
        ("dataset", "text", "DatasetTask"),  # hamrah.data.Dataset
        ("char-model", "text", "CharModelTask"),  # the text template's own nn.Module
        ("source-spec", "image", "SourceSpecTask"),
        ("image", "image", "ImageTask"),  # PIL's Image in the README's snippet
    ],
)
def test_a_name_whose_class_would_shadow_a_name_the_project_uses_gets_task_added(
    name, template, cls, tmp_path, monkeypatch
):
    import importlib

    root = new_project(name, template, tmp_path)
    ident = name.replace("-", "_")
    assert tomllib.loads((root / "sim.toml").read_text())["task"]["entry"] == f"{ident}_task:{cls}"
    assert f"class {cls}(hamrah." in (root / f"{ident}_task.py").read_text()
    monkeypatch.syspath_prepend(str(root))
    generated = importlib.import_module(f"test_{ident}")  # the project's own test, run in-process
    generated.test_two_rounds_give_a_finite_metric_and_a_model_that_loads(tmp_path / "run")


def test_a_plain_name_keeps_its_class_name(tmp_path):
    root = new_project("my-clinic", "text", tmp_path)
    assert tomllib.loads((root / "sim.toml").read_text())["task"]["entry"] == "my_clinic_task:MyClinic"


@pytest.mark.parametrize("where", ["clients/site_c.csv", "test.csv"])
def test_a_label_the_model_has_no_output_for_is_refused_before_training(where, tmp_path, capsys):
    name = "clinic_test" if where == "test.csv" else "clinic_train"  # one module name per project in this process
    root = new_project(name, "tabular", tmp_path)
    path = root / "data" / where
    lines = path.read_text().splitlines()
    lines[-1] = lines[-1].rsplit(",", 1)[0] + ",2"  # one label 2 under a BinaryTask, in the last row
    path.write_text("\n".join(lines) + "\n")
    out = tmp_path / "run"
    line = _refused(["run", str(root / "sim.toml"), "--out", str(out), "--quiet", "--no-plot"], capsys)
    split = "test" if where == "test.csv" else "training"
    assert line == (
        f"hamrah: error: task {name}: a {split} label is 2, but the model outputs 2 scores per example "
        "(labels 0 to 1); a BinaryTask takes labels 0 and 1"
    )
    assert not out.exists()
