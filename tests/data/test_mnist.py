"""MNIST loader: shapes, value ranges, sha256 verification and where it looks for files."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

import hamrah.data.locate as locate
from hamrah.core.errors import DataError
from hamrah.data.mnist import FILES, find_mnist, load_mnist

BUNDLED = Path(__file__).resolve().parents[2] / "data" / "mnist"


def test_shapes_and_dtypes(mnist):
    assert mnist.name == "mnist" and mnist.num_classes == 10
    assert mnist.train.x.shape == (60_000, 1, 28, 28) and mnist.train.y.shape == (60_000,)
    assert mnist.test.x.shape == (10_000, 1, 28, 28) and mnist.test.y.shape == (10_000,)
    assert mnist.train.x.dtype == torch.float32 and mnist.train.y.dtype == torch.int64
    assert len(mnist.train) == 60_000 and len(mnist.test) == 10_000


def test_values_and_labels(mnist):
    for split in (mnist.train, mnist.test):
        assert float(split.x.min()) == 0.0 and float(split.x.max()) == 1.0
        assert torch.equal(torch.unique(split.y), torch.arange(10))
    # Every digit is well represented (MNIST has 5,421..6,742 of each in train).
    counts = torch.bincount(mnist.train.y, minlength=10)
    assert int(counts.min()) > 5000 and int(counts.sum()) == 60_000


def _copy(dst: Path, *, link: bool = False) -> Path:
    dst.mkdir(parents=True)
    for name in FILES:
        if link:
            os.symlink(BUNDLED / name, dst / name)
        else:
            shutil.copy(BUNDLED / name, dst / name)
    return dst


def _corrupt(folder: Path, name: str = "train-labels-idx1-ubyte.gz") -> None:
    p = folder / name
    p.unlink()  # may be a symlink to the bundled file: never write through it
    data = bytearray((BUNDLED / name).read_bytes())
    data[-1] ^= 0xFF
    p.write_bytes(bytes(data))


@pytest.fixture
def no_fallback(tmp_path, monkeypatch):
    """Hide every other place MNIST could be found (bundled copy, HAMRAH_DATA, user cache)."""
    monkeypatch.delenv("HAMRAH_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(locate, "REPO_DATA", tmp_path / "no_repo_data")


def test_corrupt_explicit_copy_is_refused_when_nothing_else(tmp_path, no_fallback):
    folder = _copy(tmp_path / "mine", link=True)
    _corrupt(folder)
    with pytest.raises(DataError) as e:
        load_mnist(folder, download=False)
    msg = str(e.value)
    assert str(folder / "train-labels-idx1-ubyte.gz") in msg
    assert "sha256" in msg


def test_missing_files_listed_when_nothing_else(tmp_path, no_fallback):
    folder = tmp_path / "empty"
    folder.mkdir()
    with pytest.raises(DataError) as e:
        find_mnist(folder, download=False)
    assert str(folder) in str(e.value) and "missing" in str(e.value)


def test_valid_explicit_copy_is_used(tmp_path, no_fallback):
    folder = _copy(tmp_path / "good", link=True)
    assert find_mnist(folder, download=False) == folder


def test_corrupt_explicit_copy_raises(tmp_path, monkeypatch):
    monkeypatch.delenv("HAMRAH_DATA", raising=False)
    folder = _copy(tmp_path / "mine")
    _corrupt(folder)
    with pytest.raises(DataError) as e:
        load_mnist(folder, download=False)
    assert str(folder) in str(e.value)


def test_explicit_folder_with_missing_files_raises(tmp_path, monkeypatch):
    monkeypatch.delenv("HAMRAH_DATA", raising=False)
    folder = tmp_path / "partial"
    folder.mkdir()
    shutil.copy(BUNDLED / "t10k-labels-idx1-ubyte.gz", folder)
    with pytest.raises(DataError) as e:
        find_mnist(folder, download=False)
    assert str(folder) in str(e.value)


def test_hamrah_data_env_is_honoured(tmp_path, monkeypatch):
    root = tmp_path / "hamrah_data"
    _copy(root / "mnist", link=True)
    monkeypatch.setenv("HAMRAH_DATA", str(root))
    assert find_mnist(download=False) == root / "mnist"
    ds = load_mnist(download=False)
    assert ds.info["folder"] == str(root / "mnist")
    assert len(ds.train) == 60_000


def test_hamrah_data_corrupt_falls_back_to_bundled(tmp_path, monkeypatch):
    # HAMRAH_DATA is a search location, not an explicit request: a bad copy there is passed over.
    root = tmp_path / "hamrah_data"
    _copy(root / "mnist", link=True)
    _corrupt(root / "mnist")
    monkeypatch.setenv("HAMRAH_DATA", str(root))
    assert find_mnist(download=False) == BUNDLED
