"""`hamrah store import` given hostile files or paths that collide: one line, exit 2, nothing replaced."""

from __future__ import annotations

from pathlib import Path

import pytest

from hamrah.cli import main
from hamrah.device.store import ExampleStore


def _error(argv: list[str], capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("hamrah: error: "), err
    return err[0]


def _import(store: Path, data: Path, *more: str) -> list[str]:
    return ["store", "import", "--store", str(store), "--from", str(data), "--label", "sick", *more]


def test_save_schema_onto_the_store_or_the_data_is_refused_before_the_import(tmp_path, capsys):
    data = tmp_path / "x.csv"
    data.write_text("age,sick\n30,1\n41,0\n")
    store = tmp_path / "s.db"
    assert main(_import(store, data)) == 0  # a store holding 2 records
    capsys.readouterr()
    line = _error(_import(store, data, "--save-schema", str(store)), capsys)  # was: imported, then the store replaced
    assert "--save-schema" in line and "is also the --store file" in line
    with ExampleStore(store) as s:
        assert s.count() == 2
    line = _error(_import(tmp_path / "t.db", data, "--save-schema", str(tmp_path / "." / "x.csv")), capsys)
    assert "is also the --from file" in line  # was: the data file replaced by the schema JSON
    assert data.read_text() == "age,sick\n30,1\n41,0\n" and not (tmp_path / "t.db").exists()


@pytest.mark.parametrize(
    "schema",
    [
        "[" * 100_000,  # was a RecursionError traceback
        '{"task": "t", "schema": ' + "[" * 100_000 + "}",
        '{"fields": [{"name": "age", "dtype": "float32", "shape": [268435456]}], "label": null}',
    ],
)
def test_a_hostile_schema_file_is_one_line(tmp_path, capsys, schema):
    data = tmp_path / "x.csv"
    data.write_text("age,sick\n30,1\n")
    (tmp_path / "schema.json").write_text(schema)
    line = _error(_import(tmp_path / "s.db", data, "--schema", str(tmp_path / "schema.json")), capsys)
    assert "schema.json" in line or "shape" in line
    assert not (tmp_path / "s.db").exists() and not (tmp_path / "s.db.partial").exists()
