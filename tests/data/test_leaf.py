"""LEAF JSON reader, on the bundled FEMNIST sample and on small hand-made files."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from hamrah.core.errors import DataError
from hamrah.data.leaf import FEMNIST_CLASSES, load_leaf

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "femnist" / "sample_a"


@pytest.fixture(scope="module")
def femnist():
    return load_leaf(SAMPLE)


def _json_counts(split: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for p in sorted((SAMPLE / split).glob("*.json.gz")):
        with gzip.open(p, "rt") as fh:
            obj = json.load(fh)
        for u, n in zip(obj["users"], obj["num_samples"]):
            counts[u] = counts.get(u, 0) + n
    return counts


def test_bundled_femnist_sample(femnist):
    ds = femnist
    assert ds.name == "femnist" and ds.num_classes == FEMNIST_CLASSES == 62
    assert ds.ignore_index is None
    assert len(ds.group_names) == 105 and len(set(ds.group_names)) == 105
    assert ds.info["num_train_users"] == ds.info["num_test_users"] == 105
    assert ds.train.x.shape == (14_640, 1, 28, 28) and ds.test.x.shape == (1_677, 1, 28, 28)
    assert ds.train.x.dtype == torch.float32 and ds.train.y.dtype == torch.int64
    assert ds.train.y.shape == (14_640,) and ds.test.y.shape == (1_677,)
    for split in (ds.train, ds.test):
        assert int(split.y.min()) >= 0 and int(split.y.max()) < 62
        assert float(split.x.min()) >= 0.0 and float(split.x.max()) <= 1.0
    assert len(torch.unique(ds.train.y)) == 62


def test_groups_align_with_users(femnist):
    ds = femnist
    assert ds.train_groups.dtype == np.int64 and ds.train_groups.shape == (len(ds.train),)
    assert ds.info["test_groups"].shape == (len(ds.test),)
    sizes = np.bincount(ds.train_groups, minlength=len(ds.group_names))
    assert dict(zip(ds.group_names, sizes.tolist())) == _json_counts("train")
    test_sizes = np.bincount(ds.info["test_groups"], minlength=len(ds.group_names))
    assert dict(zip(ds.group_names, test_sizes.tolist())) == _json_counts("test")
    # A user's examples are contiguous.
    assert np.all(np.diff(ds.train_groups) >= 0)


def test_first_example_matches_the_file(femnist):
    first = sorted((SAMPLE / "train").glob("*.json.gz"))[0]
    with gzip.open(first, "rt") as fh:
        obj = json.load(fh)
    u = obj["users"][0]
    assert femnist.group_names[0] == u
    x0 = torch.tensor(obj["user_data"][u]["x"][0], dtype=torch.float32).reshape(1, 28, 28)
    assert torch.equal(femnist.train.x[0], x0)
    assert int(femnist.train.y[0]) == obj["user_data"][u]["y"][0]


def _write(path: Path, obj, *, gz: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = json.dumps(obj).encode()
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def _leaf(users: dict[str, tuple[list, list]]) -> dict:
    return {
        "users": list(users),
        "num_samples": [len(y) for _, y in users.values()],
        "user_data": {u: {"x": x, "y": y} for u, (x, y) in users.items()},
    }


def _small(tmp_path: Path) -> Path:
    _write(tmp_path / "train" / "a.json", _leaf({"u1": ([[0, 1, 2], [3, 4, 5]], [0, 2])}))
    _write(tmp_path / "train" / "b.json.gz", _leaf({"u2": ([[6, 7, 8]], [1])}), gz=True)
    _write(tmp_path / "test" / "a.json", _leaf({"u2": ([[1, 1, 1]], [4]), "u3": ([[2, 2, 2]], [1])}))
    (tmp_path / "train" / "notes.txt").write_text("ignored")
    return tmp_path


def test_small_generic_data_set(tmp_path):
    ds = load_leaf(_small(tmp_path), name="toy")
    assert ds.name == "toy" and ds.num_classes == 5  # max label + 1 over train and test
    assert ds.train.x.shape == (3, 3) and ds.train.x.dtype == torch.float32
    assert ds.train.y.tolist() == [0, 2, 1]
    assert ds.group_names == ("u1", "u2", "u3")  # u3 appears only in test
    assert ds.train_groups.tolist() == [0, 0, 1]
    assert ds.info["test_groups"].tolist() == [1, 2]
    shaped = load_leaf(tmp_path, name="toy", image_shape=(3, 1))
    assert shaped.train.x.shape == (3, 3, 1)


def test_wrong_feature_count_for_image_shape(tmp_path):
    with pytest.raises(DataError, match="784"):
        load_leaf(_small(tmp_path))  # femnist default: (1, 28, 28)


def test_missing_folder(tmp_path):
    (tmp_path / "train").mkdir()
    with pytest.raises(DataError) as e:
        load_leaf(tmp_path, name="toy")
    assert str(tmp_path / "train") in str(e.value)  # empty folder
    _write(tmp_path / "train" / "a.json", _leaf({"u1": ([[0.0]], [0])}))
    with pytest.raises(DataError) as e:
        load_leaf(tmp_path, name="toy")
    assert str(tmp_path / "test") in str(e.value)


@pytest.mark.parametrize(
    "content, words",
    [
        (b'{"users": ["u1"], "user_data": {', "not valid JSON"),
        (b"[1, 2]", "expected an object"),
        (b'{"users": ["u1"]}', "'user_data'"),
        (b'{"users": ["u1"], "num_samples": [1], "user_data": {}}', "'u1'"),
        (b'{"users": ["u1"], "user_data": {"u1": {"x": [[1.0], [2.0]], "y": [0]}}}', "labels"),
        (b'{"users": ["u1"], "user_data": {"u1": {"x": [[1.0], [2.0, 3.0]], "y": [0, 1]}}}', "'u1'"),
        (b'{"users": ["u1"], "num_samples": [3], "user_data": {"u1": {"x": [[1.0]], "y": [0]}}}', "num_samples"),
        (b'{"users": ["u1"], "user_data": {"u1": {"x": [[1.0]], "y": [-1]}}}', "labels"),
    ],
)
def test_malformed_file_names_the_file(tmp_path, content, words):
    _small(tmp_path)
    bad = tmp_path / "test" / "bad.json"
    bad.write_bytes(content)
    with pytest.raises(DataError, match=words) as e:
        load_leaf(tmp_path, name="toy")
    assert str(bad) in str(e.value)


def test_corrupt_gzip_names_the_file(tmp_path):
    _small(tmp_path)
    bad = tmp_path / "train" / "c.json.gz"
    bad.write_bytes(b"\x1f\x8b\x08\x00garbage")
    with pytest.raises(DataError) as e:
        load_leaf(tmp_path, name="toy")
    assert str(bad) in str(e.value)


def test_femnist_label_out_of_range(tmp_path):
    x = [[0.0] * 784]
    _write(tmp_path / "train" / "a.json", _leaf({"u1": (x, [62])}))
    _write(tmp_path / "test" / "a.json", _leaf({"u1": (x, [0])}))
    with pytest.raises(DataError, match="62"):
        load_leaf(tmp_path)


@pytest.mark.parametrize(
    "content, words",
    [
        (b"[" * 100_000, "not valid JSON"),  # nesting deeper than Python's stack
        (b'{"users": ["u1"], "num_samples": [' + b"9" * 5000 + b'], "user_data": {}}', "not valid JSON"),
        (b'{"users": ["u1"], "user_data": {"u1": {"x": [[1' + b"0" * 400 + b']], "y": [0]}}}', "non-numeric"),
        (b'{"users": ["u1"], "user_data": {"u1": {"x": [[NaN]], "y": [0]}}}', "NaN, infinite or null"),
        (b'{"users": ["u1"], "user_data": {"u1": {"x": [[1e400]], "y": [0]}}}', "NaN, infinite or null"),
        (b'{"users": ["u1"], "user_data": {"u1": {"x": [[null]], "y": [0]}}}', "NaN, infinite or null"),
        (b'{"users": ["u1"], "user_data": {"u1": {"x": [[1.0]], "y": [1e300]}}}', "labels"),  # was int64's minimum
        (b'{"users": ["u1", "u1"], "user_data": {"u1": {"x": [[1.0]], "y": [0]}}}', "listed twice"),  # was read twice
        (b'{"users": ["u1"], "user_data": {"u1": {"x": [[1.0]], "y": [0]}, "u9": {"x": [[1.0]], "y": [0]}}}', "'u9'"),
    ],
)
def test_hostile_file_is_one_data_error(tmp_path, monkeypatch, content, words):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # a decode cached before the check cannot answer
    _small(tmp_path)
    bad = tmp_path / "train" / "bad.json"
    bad.write_bytes(content)
    with pytest.raises(DataError, match=words) as e:
        load_leaf(tmp_path, name="toy")
    assert str(bad) in str(e.value) and "\n" not in str(e.value)


def test_a_byte_order_mark_is_read(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    _small(tmp_path)
    (tmp_path / "test" / "a.json").write_bytes(b"\xef\xbb\xbf" + json.dumps(_leaf({"u2": ([[1, 1, 1]], [4])})).encode())
    assert len(load_leaf(tmp_path, name="toy").test) == 1
