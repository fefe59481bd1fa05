"""Mistakes with `hamrah store`: a missing store, a bad --ttl, an unwritable --save-schema, a store
path under a file: one ``hamrah: error:`` line, exit 2, nothing written (no ``.partial`` left)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from hamrah.cli import main
from hamrah.core.errors import DataError
from hamrah.data.examples import Examples
from hamrah.data.federated import ArrayData
from hamrah.data.schema import Field, Schema
from hamrah.device.store import ExampleStore, new_store
from hamrah.experiments.serve import import_client

HOSPITAL_SERVER = Path(__file__).resolve().parents[2] / "examples" / "hospital" / "hospital_server.toml"


def _error(argv: list[str], capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("hamrah: error: "), err
    return err[0]


@pytest.fixture
def csv(tmp_path) -> Path:
    f = tmp_path / "x.csv"
    f.write_text("age,sick\n30,1\n41,0\n")
    return f


def _import(store, csv, *more) -> list[str]:
    return ["store", "import", "--store", str(store), "--from", str(csv), "--label", "sick", *more]


def test_counting_a_missing_store_creates_nothing(tmp_path, capsys):
    line = _error(["store", "count", "--store", str(tmp_path / "typo.db")], capsys)
    assert "typo.db: no such example store" in line
    assert not (tmp_path / "typo.db").exists()


@pytest.mark.parametrize("ttl", ["-1", "0", "nan"])
def test_a_bad_ttl_names_the_option_and_writes_nothing(tmp_path, csv, capsys, ttl):
    store = tmp_path / "s.db"
    line = _error(_import(store, csv, "--ttl", ttl), capsys)
    assert f"--ttl {ttl}: expected a positive number of seconds" in line and "ttl_s" not in line
    line = _error(["store", "import", "--config", str(HOSPITAL_SERVER), "--store", str(store), "--ttl", ttl], capsys)
    assert f"--ttl {ttl}:" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.csv"]


def _prep(info: dict):
    data = ArrayData(torch.rand(4, 3), torch.arange(4) % 2)
    fed = SimpleNamespace(
        num_clients=1, dataset=SimpleNamespace(info=info), client_data=lambda c: data, client_indices=[np.arange(2)]
    )
    return SimpleNamespace(data=fed)


@pytest.mark.parametrize("user_task", [False, True])
def test_import_client_checks_the_ttl_before_writing(tmp_path, user_task):
    schema = Schema((Field("v", "float32"), Field("y", "int64")), label="y")
    info = {"train_examples": Examples(schema, {"v": [1.0, 2.0], "y": [0, 1]})} if user_task else {}
    with pytest.raises(DataError, match="ttl_s = -1"):
        import_client(_prep(info), 0, tmp_path / "c.db", ttl_s=-1)
    assert list(tmp_path.iterdir()) == []
    assert import_client(_prep(info), 0, tmp_path / "new" / "c.db", ttl_s=60) in (2, 4)  # makes its folder


def test_an_unwritable_save_schema_is_refused_before_the_import(tmp_path, csv, capsys):
    store = tmp_path / "s.db"
    line = _error(_import(store, csv, "--save-schema", str(tmp_path / "no" / "dir" / "s.json")), capsys)
    assert "--save-schema" in line and "no folder" in line
    assert not store.exists() and not (tmp_path / "no").exists()


def test_the_store_folder_is_made_or_named(tmp_path, csv, capsys):
    store = tmp_path / "runs" / "stores" / "hospital_a.db"
    assert main(_import(store, csv)) == 0
    assert store.is_file() and not store.with_name("hospital_a.db.partial").exists()
    (tmp_path / "afile").write_text("x")
    line = _error(_import(tmp_path / "afile" / "h.db", csv), capsys)
    assert "--store" in line and "afile" in line and ".partial" not in line
    with (
        pytest.raises(DataError, match=r"afile/sub: cannot make the store's folder"),
        new_store(tmp_path / "afile" / "sub" / "s.db"),
    ):
        pass


def test_progress_in_a_log_file_is_whole_lines(tmp_path, capsys):
    f = tmp_path / "big.csv"
    f.write_text("v,y\n" + "".join(f"{i},{i % 2}\n" for i in range(25_000)))
    assert main(["store", "import", "--store", str(tmp_path / "s.db"), "--from", str(f), "--label", "y"]) == 0
    err = capsys.readouterr().err
    assert "\r" not in err and err == f"importing into {tmp_path / 's.db'}: 25,000 / 25,000 examples\n"


def test_a_second_import_says_how_many_the_store_held(tmp_path, csv, capsys):
    store = tmp_path / "s.db"
    assert main(_import(store, csv)) == 0
    capsys.readouterr()
    assert main(_import(store, csv)) == 0
    assert "imported 2 examples" in (out := capsys.readouterr().out) and "the store held 2 before, 4 now" in out
    with ExampleStore(store) as s:
        assert s.count() == 4


def test_progress_on_a_terminal_is_redrawn_and_ended_before_an_error():
    import io

    from hamrah.device.store_import import _Progress

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    out = Terminal()
    progress = _Progress(out, "s.db", 25_000)
    progress(10_000)
    progress(20_000)
    progress.end_line()
    assert (
        out.getvalue()
        == "\rimporting into s.db: 10,000 / 25,000 examples\rimporting into s.db: 20,000 / 25,000 examples\n"
    )
