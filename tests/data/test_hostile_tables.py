"""CSV files a user could not have meant, and values a column cannot hold: one DataError naming the line."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hamrah.core.errors import DataError
from hamrah.data.schema import Field, Schema
from hamrah.data.tabular import TableSpec, load_table


def _csv(tmp_path: Path, data: str | bytes, name: str = "t.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def test_a_field_longer_than_the_csv_limit_names_its_line(tmp_path):
    f = _csv(tmp_path, "a,y\n1,0\n" + "7" * 200_000 + ",1\n")  # was the csv module's own error, a traceback
    with pytest.raises(DataError, match=r"t.csv:3: cannot read the CSV \(field larger than field limit"):
        load_table(f, TableSpec(label="y"))


def test_old_mac_line_endings_and_blank_lines_name_the_right_line(tmp_path):
    ex = load_table(_csv(tmp_path, "a,y\r1,0\r2,1\r"), TableSpec(label="y"))  # was csv's "new-line character seen"
    assert ex["a"].tolist() == [1.0, 2.0] and ex.labels.tolist() == [0, 1]
    f = _csv(tmp_path, "a,y\n\n1,0\n\nx,1\n", "b.csv")
    with pytest.raises(DataError, match=r"b.csv:5, column 'a': 'x' is not a number"):  # was b.csv:3
        load_table(f, TableSpec(label="y"))
    with pytest.raises(DataError, match=r"b.csv:5: 1 values, expected 2"):
        load_table(_csv(tmp_path, "a,y\n\n1,0\n\n7\n", "b.csv"), TableSpec(label="y"))


@pytest.mark.parametrize(
    "dtype, value",
    [("uint8", "300"), ("uint8", "-1"), ("int32", "3000000000"), ("int64", "1e19"), ("float32", "1e300")],
)
def test_a_value_outside_the_declared_dtype_is_refused_not_wrapped(tmp_path, dtype, value):
    schema = Schema((Field("a", dtype), Field("y", "int64")), label="y")
    f = _csv(tmp_path, f"a,y\n1,0\n{value},1\n")  # 300 was stored as uint8 44, -1 as 255
    with pytest.raises(DataError, match=rf"t.csv:3, column 'a': '{value}' is outside {dtype}'s range"):
        load_table(f, schema=schema)
    assert load_table(_csv(tmp_path, "a,y\n1,0\n"), schema=schema)["a"].tolist() == [1]


def test_undeclared_columns_keep_their_values(tmp_path):
    with pytest.raises(DataError, match=r"t.csv:2, column 'a': '1e300' is outside float32's range"):
        load_table(_csv(tmp_path, "a,y\n1e300,0\n"), TableSpec(label="y"))  # was "NaN or infinite values"
    ex = load_table(_csv(tmp_path, "a,y\n1,1e20\n2,0\n"), TableSpec(label="y"))
    assert ex.schema.field("y").dtype == "float32" and ex.labels.tolist()[0] == pytest.approx(1e20)  # was -2**63
    assert load_table(_csv(tmp_path, "a,y\n1,9007199254740992\n"), TableSpec(label="y")).labels.dtype == np.int64


@pytest.mark.parametrize("delimiter", ["", ";;", '"', "\n"])
def test_a_delimiter_that_is_not_one_plain_character(delimiter):
    with pytest.raises(DataError, match="delimiter = .*expected one character"):  # was csv's TypeError
        TableSpec(delimiter=delimiter)


def test_an_empty_column_name_names_the_file(tmp_path):
    with pytest.raises(DataError, match=r"t.csv: a column name is empty"):  # was "field name ''" with no file
        load_table(_csv(tmp_path, "a,,y\n1,2,0\n"), TableSpec(label="y"))


def _ok_or_one_data_error(load):
    try:
        ex = load()
    except DataError as e:
        assert str(e) and "\n" not in str(e)
        return
    assert ex.schema.check(dict(ex.fields), "again")


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(
        st.one_of(
            st.sampled_from([b"a,y\n", b"1,0\n", b'"', b",", b"\r", b"\r\n", b"\n", b"\x00", b"\xef\xbb\xbf", b"\xff"]),
            st.sampled_from([b"1e400", b"-1", b"300", b"nan", b"1e20", b"x", b" "]),
            st.binary(max_size=6),
        ),
        max_size=12,
    ),
    st.booleans(),
    st.booleans(),
)
def test_any_bytes_as_a_csv_load_or_are_one_data_error(tmp_path, chunks, gz, declared):
    data = b"".join(chunks)
    f = _csv(tmp_path, gzip.compress(data) if gz else data, "t.csv.gz" if gz else "t.csv")
    schema = Schema((Field("a", "uint8"), Field("y", "int64")), label="y") if declared else None
    _ok_or_one_data_error(lambda: load_table(f, TableSpec(label="y"), schema=schema))
    _ok_or_one_data_error(lambda: load_table(f, TableSpec(column_names=("a", "y"), missing="drop")))


@pytest.mark.parametrize("name", ['"a\ny"', '"a\ry"', '"a\x0by"'])
def test_a_column_name_with_a_line_break_is_refused_on_one_line(tmp_path, name):
    """Found by the property above: a quoted header field may hold a line break, and every message that
    names the columns ran over two lines."""
    f = tmp_path / "t.csv"
    f.write_text(f"{name},y\n1,0\n", newline="")
    with pytest.raises(DataError, match="holds an unprintable character") as e:
        load_table(f, TableSpec(label="y"))
    assert "\n" not in str(e.value)


def test_a_vertical_column_name_with_a_line_break_is_refused_on_one_line(tmp_path):
    from hamrah.data.vertical import read_party_csv

    f = tmp_path / "p.csv"
    f.write_text('id,"a\nb",y\n1,0.5,1\n', newline="")
    with pytest.raises(DataError, match="holds an unprintable character") as e:
        read_party_csv(f, "id", "y")
    assert "\n" not in str(e.value)
