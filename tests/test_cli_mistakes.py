"""Mistakes with output paths, saved runs and numbers on the command line: one ``hamrah: error:`` line,
exit 2, no traceback, nothing written."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from tests.test_cli import SMALL

from hamrah.cli import build_parser, main


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HAMRAH_DATA", raising=False)


def _error(argv: list[str], capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("hamrah: error: "), err
    return err[0]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> tuple[Path, Path]:
    """A 1-round run's config and --out folder (copied before a test damages it)."""
    root = tmp_path_factory.mktemp("run")
    cfg = root / "small.toml"
    cfg.write_text(SMALL.replace("rounds = 3", "rounds = 1"))
    assert main(["run", str(cfg), "--out", str(root / "out"), "--no-plot", "--quiet"]) == 0
    return cfg, root / "out"


def _copy(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


def test_output_paths_that_are_files_are_refused_before_any_work(tmp_path, capsys):
    cfg = tmp_path / "small.toml"
    cfg.write_text(SMALL)
    (tmp_path / "afile").write_text("x")
    assert "--out afile: is a file; expected a folder" in _error(["run", str(cfg), "--out", "afile"], capsys)
    assert "lies under the file afile" in _error(["run", str(cfg), "--out", "afile/sub"], capsys)
    assert "--out afile: is a file" in _error(["sweep", str(cfg), "--lrs", "0.1", "--out", "afile"], capsys)
    assert "--dir afile: is a file" in _error(["new", "proj", "--dir", "afile"], capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "small.toml"]


@pytest.mark.parametrize("lrs", ["0.1,abc", "0.1,", "0.1,inf", "-1"])
def test_sweep_rates_must_be_positive_finite_numbers(tmp_path, capsys, lrs):
    cfg = tmp_path / "small.toml"
    cfg.write_text(SMALL)
    assert f"--lrs {lrs}: expected comma-separated positive finite numbers" in _error(
        ["sweep", str(cfg), "--lrs", lrs], capsys
    )
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: (d / "model.safetensors").write_bytes(b"\0" * 100), "the saved model cannot be read"),
        (lambda d: (d / "manifest.json").write_text("{bad"), "the saved model cannot be read"),
        (lambda d: (d / "manifest.json").write_text("[1, 2]"), "manifest.json: expected a JSON object"),
    ],
)
def test_a_damaged_saved_model_is_one_line(tmp_path, capsys, finished_run, damage, message):
    cfg, out = finished_run
    run = _copy(out, tmp_path / "damaged")
    damage(run)
    assert message in _error(["evaluate", "--model", str(run), "--config", str(cfg)], capsys)


def test_a_damaged_metrics_file_or_checkpoint_stops_a_resume_with_the_line(tmp_path, capsys, finished_run):
    cfg, out = finished_run
    run = _copy(out, tmp_path / "damaged")
    with open(run / "metrics.jsonl", "a") as f:
        f.write("garbage\n")
    argv = ["run", str(cfg), "--out", str(run), "--resume", "--rounds", "2", "--no-plot", "--quiet"]
    assert "metrics.jsonl line 2: not a round's record" in _error(argv, capsys)
    run = _copy(out, tmp_path / "damaged2")
    (run / "checkpoint.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}")  # checkpoint.json is a copy
    argv[3] = str(run)
    assert "the checkpoint cannot be read" in _error(argv, capsys)


def test_reproduce_refuses_a_round_cap_that_is_not_a_positive_number(tmp_path, capsys):
    argv = ["reproduce", "mcmahan", "--quick", "--out", "rep"]
    assert "--max-rounds-factor nan: expected a positive finite number" in _error(
        [*argv, "--max-rounds-factor", "nan"], capsys
    )
    assert "--max-rounds 0: expected an integer >= 1" in _error([*argv, "--max-rounds", "0"], capsys)
    assert not (tmp_path / "rep").exists()


def test_predict_into_a_folder_is_refused_and_leaves_no_temporary(tmp_path, capsys):
    (tmp_path / "folder").mkdir()
    (tmp_path / "rows.csv").write_text("a\n1\n")
    argv = ["predict", "--model", "nowhere", "--config", "nope.toml", "--csv", "rows.csv", "--output", "folder"]
    assert "--output folder: is a folder; expected a file name" in _error(argv, capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder", "rows.csv"]


def test_an_os_error_about_a_path_is_one_line(monkeypatch, capsys):
    def denied(args):
        raise PermissionError(13, "Permission denied", "/some/where")

    args = build_parser().parse_args(["partition", "x.toml"])
    args.func = denied
    monkeypatch.setattr("hamrah.cli.build_parser", lambda: SimpleNamespace(parse_args=lambda argv: args))
    assert _error([], capsys) == "hamrah: error: /some/where: Permission denied"


def test_a_task_whose_code_raises_is_one_line_naming_where(tmp_path, capsys):
    (tmp_path / "mytask.py").write_text(
        "import hamrah\nfrom torch import nn\n\n"
        "class T(hamrah.BinaryTask):\n"
        "    def model(self):\n"
        "        return nn.Linear(2, 2)\n"
        "    def data(self):\n"
        "        raise ValueError('no such ward')\n"
    )
    cfg = tmp_path / "t.toml"
    cfg.write_text('[task]\nentry = "mytask:T"\n[data]\npartition = "natural"\nnum_clients = 0\n')
    line = _error(["run", str(cfg), "--out", "o"], capsys)
    assert line.endswith("task T: data() raised ValueError: no such ward (at mytask.py:8)")
    assert not (tmp_path / "o").exists()
