"""Image folders by class, .npz archives and Hugging Face save_to_disk folders as Examples."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hamrah.core.errors import DataError
from hamrah.data.arrays import load_npz
from hamrah.data.images import ImageSpec, load_images
from hamrah.data.loaders import SourceSpec, detect_format, load_examples

HF_TINY = Path(__file__).resolve().parent / "fixtures" / "hf_tiny"


def _png(path: Path, value: int, size=(4, 3)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), value, np.uint8)).save(path)


# ---- images ---------------------------------------------------------------------------------------


def test_image_folder_by_class_with_split_folders(tmp_path):
    _png(tmp_path / "train" / "cat" / "1.png", 255)
    _png(tmp_path / "train" / "cat" / "2.png", 0)
    _png(tmp_path / "train" / "dog" / "1.png", 51)
    _png(tmp_path / "test" / "emu" / "1.png", 102)  # a class only the test split has
    _png(tmp_path / "test" / "dog" / "1.png", 102)
    train = load_images(tmp_path, ImageSpec(split="train"))
    test = load_images(tmp_path, ImageSpec(split="test"))
    assert train.schema == test.schema, "both splits share the class list"
    assert train.schema.field("label").categories == ("cat", "dog", "emu")
    assert train["image"].shape == (3, 3, 3, 4) and train.labels.tolist() == [0, 0, 1]
    assert test.labels.tolist() == [1, 2]
    np.testing.assert_allclose(train["image"][2], 0.2)
    assert detect_format(tmp_path) == "images"
    with pytest.raises(DataError, match="has split folders test, train; choose one with split="):
        load_images(tmp_path)


def test_image_errors_name_the_file(tmp_path):
    _png(tmp_path / "a" / "1.png", 1)
    _png(tmp_path / "a" / "2.png", 1, size=(5, 5))
    with pytest.raises(
        DataError, match=r"2.png: image of 5x5 pixels \(height x width\), expected 3x4 .*image_size=\(height, width\)"
    ):
        load_images(tmp_path)
    assert load_images(tmp_path, ImageSpec(size=(2, 2), mode="L"))["image"].shape == (2, 1, 2, 2)
    (tmp_path / "a" / "3.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="3.png: not a readable image"):
        load_images(tmp_path, ImageSpec(size=(2, 2)))
    with pytest.raises(DataError, match="no class folders"):
        load_images(tmp_path / "a")
    with pytest.raises(DataError, match="no such folder"):
        load_images(tmp_path / "nope")


# ---- npz ------------------------------------------------------------------------------------------


def test_npz_fields_splits_text_labels_and_clients(tmp_path):
    f = tmp_path / "d.npz"
    np.savez(
        f,
        x_train=np.ones((4, 2), np.float16),
        y_train=np.array(["b", "a", "b", "c"]),
        who_train=np.array([7, 7, 9, 9]),
        x_test=np.zeros((1, 2)),
        y_test=np.array(["a"]),
    )
    ex = load_npz(f, split="train", client="who")
    assert ex.schema.describe() == "x: float32[2], y: int64{3 categories} (label)"
    assert ex.labels.tolist() == [1, 0, 1, 2] and ex.group_names == ("7", "9")
    assert len(load_examples(f, SourceSpec(split="test"))) == 1


@pytest.mark.parametrize(
    "arrays, kw, match",
    [
        ({"x": np.array([{"a": 1}], dtype=object)}, {}, "without pickled objects"),
        ({"x": np.zeros((3, 2)), "y": np.zeros(2)}, {}, "array 'x' has 3 rows, expected 2"),
        ({"x": np.zeros(3)}, {"label": "y"}, "no label array 'y'"),
        ({"x": np.zeros(3)}, {"split": "train"}, "no arrays of split 'train'"),
        ({"x": np.zeros(3, np.complex64)}, {}, "dtype complex64, expected numbers"),
    ],
)
def test_npz_errors(tmp_path, arrays, kw, match):
    f = tmp_path / "d.npz"
    np.savez(f, **arrays)
    with pytest.raises(DataError, match=match):
        load_npz(f, **kw)


def test_npz_corrupt_file(tmp_path):
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04 broken")
    with pytest.raises(DataError, match="bad.npz: not a readable .npz archive"):
        load_npz(tmp_path / "bad.npz")


# ---- Hugging Face save_to_disk --------------------------------------------------------------------


def test_hf_folder_made_by_datasets_reads_offline_with_pyarrow():
    pytest.importorskip("pyarrow")
    train = load_examples(HF_TINY, SourceSpec(split="train"))
    assert detect_format(HF_TINY) == "hf"
    assert train.schema.describe() == (
        "x: float32[3], n: int32, flag: bool, city: int64{3 categories}, "
        "grid: float32[2, 2], img: float32[3, 2, 2], label: int64{2 categories} "
        "(label)"
    )
    assert train["x"][1].tolist() == [1.0, 0.5, -1.0] and train["grid"][3].tolist() == [[3, 1], [2, 3]]
    assert train.labels.tolist() == [0, 1, 0, 1, 0, 1] and train.schema.field("label").categories == ("cat", "dog")
    np.testing.assert_allclose(train["img"][1].transpose(1, 2, 0).ravel(), (np.arange(12) + 1) / 255, atol=1e-7)
    test = load_examples(HF_TINY, SourceSpec(split="test"), schema=train.schema)
    assert test.schema == train.schema and len(test) == 3


def test_hf_errors(tmp_path):
    pytest.importorskip("pyarrow")
    from hamrah.data.hub import load_hf

    with pytest.raises(DataError, match="splits train, test; choose one with split="):
        load_hf(HF_TINY)
    with pytest.raises(DataError, match="no label column 'y'"):
        load_hf(HF_TINY, split="train", label="y")
    with pytest.raises(DataError, match="not a save_to_disk folder"):
        load_hf(tmp_path)
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(HF_TINY / "train", broken)
    (broken / "data-00000-of-00001.arrow").write_bytes(b"garbage")
    with pytest.raises(DataError, match="data-00000-of-00001.arrow: cannot read the Arrow file"):
        load_hf(broken)


def test_declared_classes_and_schemas_fix_the_codes(tmp_path):
    _png(tmp_path / "dog" / "1.png", 9)
    ex = load_images(tmp_path, ImageSpec(classes=("cat", "dog")))
    assert ex.labels.tolist() == [1] and ex.schema.field("label").categories == ("cat", "dog")
    with pytest.raises(DataError, match="class folder 'dog' is not a declared class"):
        load_images(tmp_path, ImageSpec(classes=("cat", "emu")))
    np.savez(tmp_path / "d.npz", x=np.zeros((2, 1)), y=np.array(["b", "b"]))
    own = load_npz(tmp_path / "d.npz")
    assert own.labels.tolist() == [0, 0]  # its own vocabulary has only "b"
    from hamrah.data.schema import Field, Schema

    task = Schema((Field("x", "float32", (1,)), Field("y", "int64", categories=("a", "b"))), label="y")
    assert load_examples(tmp_path / "d.npz", schema=task).labels.tolist() == [1, 1]


def _hf_folder(path: Path, table, features: dict) -> Path:
    import json

    pa = pytest.importorskip("pyarrow")
    path.mkdir()
    with (
        pa.OSFile(str(path / "data-00000-of-00001.arrow"), "wb") as sink,
        pa.ipc.new_stream(sink, table.schema) as writer,
    ):
        writer.write_table(table)
    (path / "state.json").write_text(json.dumps({"_data_files": [{"filename": "data-00000-of-00001.arrow"}]}))
    (path / "dataset_info.json").write_text(json.dumps({"features": features}))
    return path


def test_hf_variable_length_and_unsupported_features_are_refused(tmp_path):
    pa = pytest.importorskip("pyarrow")
    from hamrah.data.hub import load_hf

    ragged = _hf_folder(
        tmp_path / "ragged",
        pa.table({"v": [[1.0, 2.0], [3.0]], "label": [0, 1]}),
        {
            "v": {"feature": {"dtype": "float32", "_type": "Value"}, "_type": "List"},
            "label": {"names": ["a", "b"], "_type": "ClassLabel"},
        },
    )
    with pytest.raises(DataError, match="column 'v': rows of different lengths or types"):
        load_hf(ragged)
    audio = _hf_folder(
        tmp_path / "audio",
        pa.table({"a": [b"x"], "label": [0]}),
        {"a": {"_type": "Audio"}, "label": {"names": ["a"], "_type": "ClassLabel"}},
    )
    with pytest.raises(DataError, match="column 'a': feature type Audio is not supported"):
        load_hf(audio)
    holes = _hf_folder(
        tmp_path / "holes",
        pa.table({"n": [1, None], "label": [0, 1]}),
        {"n": {"dtype": "int64", "_type": "Value"}, "label": {"names": ["a", "b"], "_type": "ClassLabel"}},
    )
    with pytest.raises(DataError, match="column 'n': has missing values"):
        load_hf(holes)


def test_tsv_files_are_tab_separated(tmp_path):
    from hamrah.data.tabular import TableSpec, load_table

    (tmp_path / "t.tsv").write_text("a\tb\ty\n1\tred\t0\n2\tblue\t1\n")
    ex = load_table(tmp_path / "t.tsv", TableSpec(label="y"))
    assert ex["a"].tolist() == [1.0, 2.0] and ex.schema.field("b").categories == ("blue", "red")
