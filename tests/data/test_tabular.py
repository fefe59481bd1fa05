"""CSV and Parquet loaders: per-client files, a client-id column, consistent codes, clear errors."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hamrah.core.errors import DataError
from hamrah.data.loaders import SourceSpec, detect_format, load_examples
from hamrah.data.partition import PartitionSpec, split_examples
from hamrah.data.tabular import TableSpec, load_table

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

REPO = Path(__file__).resolve().parents[2]
BREAST = REPO / "data" / "tabular" / "breast_homo"
KDD = REPO / "data" / "tabular" / "nsl_kdd_sample"
KDD_COLUMNS = tuple((KDD / "columns.txt").read_text().strip().split(","))


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_bundled_breast_hospitals_are_natural_clients_with_a_test_file():
    files = [BREAST / "breast_homo_guest.csv.gz", BREAST / "breast_homo_host.csv.gz"]
    features = tuple(f"x{i}" for i in range(30))
    train = load_table(files, TableSpec(label="y", features=features))
    assert len(train) == 227 + 228 and train.group_names == ("breast_homo_guest", "breast_homo_host")
    assert train.schema.label == "y" and train.schema.field("y").dtype == "int64" and train.num_classes == 2
    test = load_table(BREAST / "breast_homo_test.csv.gz", schema=train.schema)
    assert len(test) == 114 and test.schema == train.schema
    parts = split_examples(train, PartitionSpec("natural", None), seed=0)
    assert [len(p) for p in parts] == [227, 228]
    assert train.to_array_data().x.shape == (455, 30)


def test_nsl_kdd_text_columns_get_one_vocabulary_and_the_test_file_reuses_it():
    spec = TableSpec(label="attack", features=KDD_COLUMNS[:41], column_names=KDD_COLUMNS)
    train = load_table(KDD / "KDDTrain+_20Percent_every12.txt.gz", spec)
    proto = train.schema.field("protocol_type")
    assert proto.categories == ("icmp", "tcp", "udp") and train.schema.field("duration").dtype == "float32"
    assert "normal" in train.schema.field("attack").categories
    with pytest.raises(DataError, match=r"KDDTest\+_every20.txt.gz:\d+, column '(service|attack)': unknown category"):
        load_table(KDD / "KDDTest+_every20.txt.gz", spec, schema=train.schema)  # attacks unseen in training


def test_client_id_column_gives_natural_clients_and_codes_agree_across_files(tmp_path):
    a = _write(tmp_path / "a.csv", "site,city,age,sick\nh1,tehran,30,yes\nh2,shiraz,41,no\nh1,tabriz,50,no\n")
    b = _write(tmp_path / "b.csv", "age,sick,site,city\n22,no,h3,yazd\n")
    ex = load_table([a, b], TableSpec(label="sick", client_column="site"))
    assert ex.schema.names == ("city", "age", "sick")
    assert ex.schema.field("city").categories == ("shiraz", "tabriz", "tehran", "yazd")
    assert ex["city"].tolist() == [2, 0, 1, 3] and ex.labels.tolist() == [1, 0, 0, 0]
    assert ex.group_names == ("h1", "h2", "h3") and ex.groups.tolist() == [0, 1, 0, 2]


def test_missing_values_error_or_drop(tmp_path):
    f = _write(tmp_path / "m.csv", "a,b,y\n1,2,0\n3,,1\nNA,4,0\n5,6,1\n")
    with pytest.raises(DataError, match=r"m.csv:3, column 'b': missing value \(missing='error'"):
        load_table(f, TableSpec(label="y"))
    ex = load_table(f, TableSpec(label="y", missing="drop"))
    assert ex["a"].tolist() == [1.0, 5.0] and ex.labels.tolist() == [0, 1]


@pytest.mark.parametrize(
    "text, spec, match",
    [
        ("a,y\n1,0\n", TableSpec(label="label"), r"bad.csv: no label column 'label' \(columns: a, y\)"),
        ("a,y\n1,0\n", TableSpec(label="y", features=("b",)), "no feature column 'b'"),
        ("a,y\n1,0\nx,1\n", TableSpec(label="y"), r"bad.csv:3, column 'a': 'x' is not a number .*categorical"),
        ("a,y\n1,0\n2\n", TableSpec(label="y"), r"bad.csv:3: 1 values, expected 2"),
        ("a,y\ninf,0\n", TableSpec(label="y"), "not a finite number"),
        ("", TableSpec(label="y"), "empty file"),
        ("a,a\n1,2\n", TableSpec(), "appears twice"),
    ],
)
def test_bad_tables_get_one_line_naming_file_and_column(tmp_path, text, spec, match):
    with pytest.raises(DataError, match=match):
        load_table(_write(tmp_path / "bad.csv", text), spec)


def test_files_with_different_columns_corrupt_gzip_and_wrong_schema(tmp_path):
    a = _write(tmp_path / "a.csv", "a,y\n1,0\n")
    b = _write(tmp_path / "b.csv", "a,z\n1,0\n")
    with pytest.raises(DataError, match=r"b.csv: its columns differ .*missing \['y'\]; extra \['z'\]"):
        load_table([a, b], TableSpec(label="y"))
    gz = tmp_path / "c.csv.gz"
    gz.write_bytes(gzip.compress(b"a,y\n1,0\n")[:-6])
    with pytest.raises(DataError, match="c.csv.gz: cannot read the CSV"):
        load_table(gz, TableSpec(label="y"))
    train = load_table(a, TableSpec(label="y"))
    with pytest.raises(DataError, match=r"no label column 'y'"):
        load_table(b, schema=train.schema)
    frac = _write(tmp_path / "d.csv", "a,y\n1,0.5\n")
    with pytest.raises(DataError, match=r"d.csv:2, column 'y': '0.5' is not a whole number \(expected int64\)"):
        load_table(frac, schema=train.schema)


@st.composite
def tables(draw):
    n = draw(st.integers(1, 12))
    nums = draw(st.lists(st.floats(-1e6, 1e6, allow_nan=False, width=32), min_size=n, max_size=n))
    words = draw(st.lists(st.sampled_from(["red", "green", "blue", "a b", "x,y"]), min_size=n, max_size=n))
    labels = draw(st.lists(st.integers(0, 3), min_size=n, max_size=n))
    clients = draw(st.lists(st.sampled_from(["c1", "c2"]), min_size=n, max_size=n))
    return nums, words, labels, clients


@settings(max_examples=25, deadline=None)
@given(tables())
def test_csv_and_parquet_of_the_same_table_load_the_same(tmp_path_factory, table):
    nums, words, labels, clients = table
    d = tmp_path_factory.mktemp("t")
    t = pa.table({"num": pa.array(nums, pa.float32()), "word": words, "y": labels, "client": clients})
    pq.write_table(t, d / "t.parquet")
    import csv

    with open(d / "t.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["num", "word", "y", "client"])
        w.writerows(zip([repr(float(np.float32(v))) for v in nums], words, labels, clients))
    spec = TableSpec(label="y", client_column="client")
    from_csv, from_pq = load_table(d / "t.csv", spec), load_table(d / "t.parquet", spec)
    assert from_csv.schema == from_pq.schema
    for name in from_csv.schema.names:
        np.testing.assert_array_equal(from_csv[name], from_pq[name])
    assert from_csv.groups.tolist() == from_pq.groups.tolist()
    np.testing.assert_array_equal(from_csv["num"], np.array(nums, np.float32))
    assert [from_csv.schema.field("word").categories[c] for c in from_csv["word"]] == words


def test_load_examples_tells_the_format(tmp_path):
    f = _write(tmp_path / "t.csv", "a,y\n1,0\n")
    assert detect_format(f) == "csv" and detect_format(tmp_path) == "csv"
    assert len(load_examples(f, SourceSpec(label="y"))) == 1
    with pytest.raises(DataError, match="cannot tell the format"):
        detect_format(_write(tmp_path / "t.xyz", ""))
    with pytest.raises(DataError, match="format 'xls'"):
        SourceSpec(format="xls")
    with pytest.raises(DataError, match="no such file"):
        load_examples(tmp_path / "nope.csv")


def test_parquet_nested_column_refused(tmp_path):
    pq.write_table(pa.table({"v": [[1, 2], [3]], "y": [0, 1]}), tmp_path / "n.parquet")
    with pytest.raises(DataError, match=r"n.parquet: column 'v' has type list<.*expected numbers"):
        load_table(tmp_path / "n.parquet", TableSpec(label="y"))
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(DataError, match="bad.parquet: cannot read the Parquet file"):
        load_table(tmp_path / "bad.parquet", TableSpec(label="y"))


def test_missing_pyarrow_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "pyarrow", None)  # import pyarrow now raises ImportError
    monkeypatch.setitem(__import__("sys").modules, "pyarrow.parquet", None)
    with pytest.raises(
        DataError,
        match=r"x.parquet: reading Parquet needs the pyarrow.parquet library.*"
        r"pip install 'hamrah\[data\]'",
    ):
        load_table(_write(tmp_path / "x.parquet", ""), TableSpec())


@settings(max_examples=25, deadline=None)
@given(
    st.lists(
        st.lists(st.sampled_from(["ab", "b", "c d", "é", "x,y", "7"]), min_size=1, max_size=5), min_size=1, max_size=4
    )
)
def test_every_file_of_one_load_shares_one_vocabulary(tmp_path_factory, per_file):
    import csv

    d = tmp_path_factory.mktemp("v")
    paths = []
    for i, words in enumerate(per_file):
        paths.append(d / f"client{i}.csv")
        with open(paths[-1], "w", newline="") as f:
            csv.writer(f).writerows([["word", "y"], *[(w, 0) for w in words]])
    ex = load_table(paths, TableSpec(label="y", categorical=("word",)))
    cats = ex.schema.field("word").categories
    assert cats == tuple(sorted({w for words in per_file for w in words}))
    for i, words in enumerate(per_file):
        mine = ex.take(np.flatnonzero(ex.groups == i)) if len(paths) > 1 else ex
        assert [cats[c] for c in mine["word"]] == words


def test_a_format_given_reads_every_file_whatever_its_name_and_a_header_alone_is_refused(tmp_path):
    (tmp_path / "rows.dat").write_text("a,b,y\n1,2,0\n3,4,1\n")
    ex = load_examples(tmp_path / "rows.dat", SourceSpec(format="csv", label="y"))
    assert len(ex) == 2 and ex.labels.tolist() == [0, 1]
    with pytest.raises(DataError, match="rows.dat"):  # said to be Parquet: read as Parquet, and refused
        load_examples(tmp_path / "rows.dat", SourceSpec(format="parquet", label="y"))
    (tmp_path / "header.csv").write_text("a,b,y\n")
    with pytest.raises(DataError, match="header.csv: no rows; expected at least one row under the header"):
        load_examples(tmp_path / "header.csv", SourceSpec(label="y"))
