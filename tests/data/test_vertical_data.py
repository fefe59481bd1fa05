"""The bundled vertical splits and the party CSV reader."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hamrah.core.errors import DataError
from hamrah.data.vertical import id_digest, load_vertical, read_party_csv


def test_bundled_splits_share_their_ids():
    d = load_vertical("breast")
    assert d["guest"].features.shape == (569, 10) and d["host"].features.shape == (569, 20)
    assert set(d["guest"].ids) == set(d["host"].ids) and set(np.unique(d["guest"].labels)) == {0.0, 1.0}
    host = d["host"].select(d["guest"].ids)
    assert np.array_equal(host.ids, d["guest"].ids)


def test_bad_files_name_the_problem(tmp_path):
    f = tmp_path / "p.csv"
    f.write_text("id,x0\n1,0.5\n1,0.7\n")
    with pytest.raises(DataError, match="must hold unique ids"):
        read_party_csv(f)
    f.write_text("id,x0\n1,abc\n")
    with pytest.raises(DataError, match="expected numbers"):
        read_party_csv(f)
    with pytest.raises(DataError, match="no column 'y'"):
        read_party_csv(f, label_column="y")
    with pytest.raises(DataError, match="unknown vertical data set"):
        load_vertical("iris")
    with pytest.raises(DataError, match="not in this table"):
        load_vertical("breast")["host"].select(np.array([-5]))


def test_checksum_mismatch_is_refused(tmp_path):
    import gzip

    (tmp_path / "breast_hetero_guest.csv.gz").write_bytes(gzip.compress(b"id,y,x0\n1,0,0.5\n"))
    with pytest.raises(DataError, match="checksum mismatch"):
        load_vertical("breast", tmp_path)


def test_integer_ids_are_exact_beyond_float_precision(tmp_path):
    f = tmp_path / "p.csv"
    big = 2**62 + 1  # a float64 would round it (and its neighbour) to 2**62
    f.write_text(f"id,x0\n{big},0.5\n{big + 1},0.7\n-3,1\n4.0,2\n")
    assert read_party_csv(f).ids.tolist() == [big, big + 1, -3, 4]
    f.write_text("id,x0\nC-17,0.5\n")
    with pytest.raises(DataError, match="must hold integer ids \\(found 'C-17'\\); for text ids set"):
        read_party_csv(f)
    with pytest.raises(DataError, match="id_type = 'uuid'"):
        read_party_csv(f, id_type="uuid")


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc", "Zs", "Zl", "Zp")), min_size=1, max_size=12),
        min_size=1,
        max_size=20,
        unique=True,
    )
)
def test_text_ids_round_trip_and_join_by_digest(keys):
    import csv
    import io
    import tempfile
    from pathlib import Path

    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["id", "x0"])
    writer.writerows([k, i] for i, k in enumerate(keys))
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "p.csv"
        path.write_text(buf.getvalue())
        table = read_party_csv(path, id_type="str")
    assert table.id_text() == keys  # as written, in file order
    assert table.ids.tolist() == id_digest(keys).tolist()  # what every other party computes for them
    reordered = table.select(table.ids[::-1])
    assert reordered.id_text() == keys[::-1] and reordered.features[:, 0].tolist() == list(range(len(keys)))[::-1]


def test_an_empty_cell_is_a_missing_value(tmp_path):
    f = tmp_path / "p.csv"
    f.write_text("id,x0,x1\n1,,0.5\n2,3, \n")
    x = read_party_csv(f).features
    assert np.isnan(x[0, 0]) and np.isnan(x[1, 1]) and x[0, 1] == 0.5 and x[1, 0] == 3


def test_repeated_text_ids_are_refused(tmp_path):
    f = tmp_path / "p.csv"
    f.write_text("id,x0\nalice,1\nbob,2\nalice,3\n")
    with pytest.raises(DataError, match="unique ids \\(1 repeat\\)"):
        read_party_csv(f, id_type="str")


@pytest.mark.parametrize(
    "data, kw, match",
    [
        ("id,a\n1," + "7" * 200_000 + "\n", {}, r"p.csv:2: cannot read the CSV \(field larger"),  # was csv.Error
        ("id,a\n1,inf\n", {}, r"p.csv:2, column 'a': not a finite number"),  # was a feature of infinity
        ("id,a,y\n1,2,-1e400\n", {"label_column": "y"}, r"p.csv:2, column 'y': not a finite number"),
        ("id,a,a\n1,2,3\n", {}, "appears twice"),  # was two features of one name
        ("id,id,a\n1,2,3\n", {}, "appears twice"),
        ("id,a\n1,2\n", {"label_column": "id"}, "the label column is the id column"),  # was a ValueError
        ("id,a\n\n1,2\n\n7\n", {}, r"p.csv:5: 1 values, expected 2"),  # was p.csv:3
    ],
)
def test_hostile_party_files_are_one_data_error(tmp_path, data, kw, match):
    f = tmp_path / "p.csv"
    f.write_text(data)
    with pytest.raises(DataError, match=match):
        read_party_csv(f, **kw)


def test_a_byte_order_mark_and_old_mac_line_endings_are_read(tmp_path):
    f = tmp_path / "p.csv"
    f.write_bytes(b"\xef\xbb\xbfid,a,y\r1,0.5,1\r2,0.25,0\r")  # was "no column 'id' (columns: \ufeffid, ...)"
    t = read_party_csv(f, label_column="y")
    assert t.ids.tolist() == [1, 2] and t.features.tolist() == [[0.5], [0.25]] and t.labels.tolist() == [1.0, 0.0]
