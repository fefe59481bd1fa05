"""``hamrah store import --config DEVICE.toml --from PATH``: a site fills its store from its own files,
read by the task's ``local_data`` (the default: a loader under the task's schema), the same records the
simulator gives that site; a task without a schema or a local_data of its own is told what to add."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from hamrah.cli import main
from hamrah.device.store import ExampleStore

TASK = """
import numpy as np, torch
from pathlib import Path
from torch import nn
import hamrah
from hamrah.data import ArrayData, Dataset, Field, Schema, load_examples, SourceSpec

HERE = Path(__file__).resolve().parent

class Declared(hamrah.BinaryTask):  # a schema: the default local_data reads a site's CSV under it
    schema = Schema((Field("a", "float32"), Field("b", "float32"), Field("y", "int64")), label="y")
    def model(self):
        return nn.Linear(2, 2)
    def data(self):
        return load_examples([HERE / "s1.csv", HERE / "s2.csv"], SourceSpec(), self.schema)

class Undeclared(Declared):
    schema = None

class Windows(hamrah.ClassificationTask):  # arrays cut from a file: a local_data of its own
    def model(self):
        return nn.Linear(3, 2)
    def cut(self, path):
        v = np.loadtxt(path, dtype=np.float32)
        x = torch.from_numpy(np.stack([v[i:i + 3] for i in range(len(v) - 3)]))
        return ArrayData(x, (x.sum(1) > 0).long())
    def local_data(self, path):
        return self.cut(path)
    def data(self):
        parts = [self.cut(HERE / f"w{k}.txt") for k in (1, 2)]
        owner = np.concatenate([np.full(len(p.x), k) for k, p in enumerate(parts)])
        train = ArrayData(torch.cat([p.x for p in parts]), torch.cat([p.y for p in parts]))
        return Dataset("windows", train, parts[0], 2, owner, ("w1", "w2"))
"""


@pytest.fixture
def site(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    for k in (1, 2):
        rows = ["a,b,y", *(f"{a:.3f},{b:.3f},{int(a > b)}" for a, b in rng.normal(size=(20, 2)))]
        (tmp_path / f"s{k}.csv").write_text("\n".join(rows) + "\n")
        (tmp_path / f"w{k}.txt").write_text("\n".join(f"{v:.4f}" for v in rng.normal(size=30)) + "\n")
    (tmp_path / "site_tasks.py").write_text(TASK)
    yield tmp_path
    sys.modules.pop("site_tasks", None)


def _device(tmp_path, cls):
    cfg = tmp_path / f"{cls}.toml"
    cfg.write_text(f'[task]\nentry = "site_tasks:{cls}"\n[data]\npartition = "natural"\nnum_clients = 0\n')
    return str(cfg)


def test_a_site_imports_its_own_csv_under_the_tasks_schema(site, capsys):
    cfg = _device(site, "Declared")
    assert main(["store", "import", "--config", cfg, "--from", "s2.csv", "--store", "own.db"]) == 0
    assert main(["store", "import", "--config", cfg, "--client", "1", "--store", "sim.db"]) == 0
    with ExampleStore(site / "own.db") as own, ExampleStore(site / "sim.db") as sim:
        a, b = own.examples(), sim.examples()
        assert own.schema == sim.schema and len(a) == len(b) == 20
        np.testing.assert_array_equal(a.fields["a"], b.fields["a"])


def test_a_task_with_its_own_local_data_gives_the_simulators_records(site, capsys):
    cfg = _device(site, "Windows")
    assert main(["store", "import", "--config", cfg, "--from", "w1.txt", "--store", "own.db"]) == 0
    assert main(["store", "import", "--config", cfg, "--client", "0", "--store", "sim.db"]) == 0
    with ExampleStore(site / "own.db") as own, ExampleStore(site / "sim.db") as sim:
        assert own.count() == sim.count() == 27
        torch.testing.assert_close(own.read_all().x, sim.read_all().x, rtol=0, atol=0)


def test_a_task_without_a_schema_says_what_to_add_and_writes_nothing(site, capsys):
    argv = ["store", "import", "--config", _device(site, "Undeclared"), "--from", "s1.csv", "--store", "x.db"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "declares no schema to read a site's own files under; expected a schema" in err
    assert not (site / "x.db").exists() and not (site / "x.db.partial").exists()
