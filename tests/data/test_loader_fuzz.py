"""Hostile files: whatever the bytes, a loader returns examples that match their schema or one DataError."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hamrah.core.errors import DataError
from hamrah.data.arrays import load_npz
from hamrah.data.images import ImageSpec, load_images
from hamrah.data.tabular import TableSpec, load_table

cells = st.one_of(
    st.sampled_from(["", "1", "-2.5", "NA", "?", "inf", "nan", "x", "1e400", "0x10", " 3 ", '"q"', "tehran", "1,2"]),
    st.text(max_size=4),
)
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _ok_or_data_error(load):
    try:
        ex = load()
    except DataError as e:
        assert str(e) and "\n" not in str(e), "one line"
        return None
    assert ex.schema.check(dict(ex.fields), "again")  # what came back matches its own schema
    return ex


@FUZZ
@given(
    st.lists(st.lists(cells, min_size=1, max_size=4), min_size=0, max_size=6),
    st.sampled_from(["error", "drop"]),
    st.booleans(),
)
def test_any_csv_text_loads_or_is_one_data_error(tmp_path, rows, missing, gz):
    import csv
    import gzip

    buf = io.StringIO()
    csv.writer(buf).writerows([["a", "b", "y"], *rows])
    f = tmp_path / ("t.csv.gz" if gz else "t.csv")
    data = buf.getvalue().encode("utf-8", "replace")  # hypothesis text may hold lone surrogates
    f.write_bytes(gzip.compress(data) if gz else data)
    ex = _ok_or_data_error(lambda: load_table(f, TableSpec(label="y", missing=missing)))
    if ex is not None:
        assert len(ex) <= len(rows) and ex.schema.names == ("a", "b", "y")


@FUZZ
@given(st.binary(max_size=200))
def test_any_bytes_as_npz_or_image_or_gzip_csv_are_one_data_error(tmp_path, blob):
    (tmp_path / "x.npz").write_bytes(blob)
    _ok_or_data_error(lambda: load_npz(tmp_path / "x.npz"))
    (tmp_path / "c").mkdir(exist_ok=True)
    (tmp_path / "c" / "i.png").write_bytes(blob)
    _ok_or_data_error(lambda: load_images(tmp_path, ImageSpec(size=(2, 2))))
    (tmp_path / "t.csv.gz").write_bytes(blob)
    _ok_or_data_error(lambda: load_table(tmp_path / "t.csv.gz", TableSpec()))


@FUZZ
@given(
    st.dictionaries(
        st.sampled_from(["x", "y", "x_train", "y_train", "label"]),
        st.sampled_from(["f2", "i1", "u2", "b", "U3", "c8", "f8", "scalar"]),
        max_size=4,
    ),
    st.integers(0, 4),
)
def test_any_npz_arrays_load_or_are_one_data_error(tmp_path, spec, n):
    arrays = {}
    for key, dt in spec.items():
        arrays[key] = np.array(3.0) if dt == "scalar" else np.zeros((n + (key == "y"), 2)[: 1 + (key == "x")], dt)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    (tmp_path / "a.npz").write_bytes(buf.getvalue())
    for split in (None, "train"):
        _ok_or_data_error(lambda split=split: load_npz(tmp_path / "a.npz", split=split))


def test_a_zip_that_is_not_an_npz(tmp_path):
    with zipfile.ZipFile(tmp_path / "z.npz", "w") as z:
        z.writestr("x.npy", b"\x93NUMPY garbage")
    with pytest.raises(DataError, match="z.npz"):
        load_npz(tmp_path / "z.npz")
