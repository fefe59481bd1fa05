"""Mistakes with ``hamrah lab`` and ``hamrah reproduce`` options: one ``hamrah: error:`` line, exit 2,
nothing written (the checks run before any training)."""

from __future__ import annotations

import pytest

from hamrah.cli import main


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def _error(argv: list[str], capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("hamrah: error: "), err
    return err[0]


LAB = """[data]
dataset = "mnist"
num_clients = 200
[algorithm]
client_fraction = 0.025
[run]
rounds = 1
[lab]
attacks = ["sign_flip"]
defences = ["median"]
"""


@pytest.mark.parametrize("option", ["--doc", "--img"])
def test_lab_update_doc_into_a_folder_is_refused_before_the_matrix_trains(tmp_path, capsys, option):
    (tmp_path / "lab.toml").write_text(LAB)
    (tmp_path / "afolder").mkdir()
    msg = _error(["lab", "lab.toml", "--update-doc", option, "afolder", "--out", "out"], capsys)
    assert f"{option} afolder: is a folder; expected a file name" in msg
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afolder", "lab.toml"]


def test_lab_refuses_a_share_that_voids_a_defence_on_the_command_line(tmp_path, capsys):
    (tmp_path / "lab.toml").write_text(LAB.replace('["median"]', '["median", "mean"]'))
    msg = _error(["lab", "lab.toml", "--defences", "trimmed_mean", "--out", "out"], capsys)
    assert "defence 'trimmed_mean'" in msg and "covers at most 0" in msg
    assert "names mean twice" in _error(["lab", "lab.toml", "--defences", "mean,mean", "--check"], capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lab.toml"]


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--quick", "--table1"], "--quick and --table1 each choose what to do"),
        (["--table1", "--cells", "2nn-iid-e1-b10"], "--table1 and --cells each choose what to do"),
        (["--cells", "2nn-iid-e1-b10", "--render", "r.json"], "--cells and --render each choose what to do"),
        (["--cells", ","], "--cells ',': expected comma-separated cell ids"),
    ],
)
def test_reproduce_refuses_options_that_choose_different_work(tmp_path, capsys, argv, message):
    assert message in _error(["reproduce", "mcmahan", *argv, "--out", "out"], capsys)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("text", ["[]", "{not json"])
def test_reproduce_render_of_no_rows_is_refused_and_makes_no_folder(tmp_path, capsys, text):
    (tmp_path / "r.json").write_text(text)
    assert "--render r.json" in _error(["reproduce", "mcmahan", "--render", "r.json", "--out", "out"], capsys)
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]
