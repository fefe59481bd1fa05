"""Tables as examples: CSV (plain or gzipped) and Parquet files, one per client or one in all.

One column is the label, the chosen columns are the features (one scalar field each), and an
optional client-id column gives the natural partition; loading several files (one per client)
makes each file a natural client. A text column is categorical: its vocabulary is the sorted set of
its values across all the files of one load, so every client's codes agree; pass ``schema=`` (the
training set's) to load a test file with the same codes and columns.
"""

from __future__ import annotations

import csv
import gzip
import importlib
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hamrah.core.errors import DataError
from hamrah.data.examples import Examples
from hamrah.data.schema import Field, Schema

MISSING = frozenset({"", "NA", "N/A", "NaN", "nan", "null", "NULL", "None", "?"})
CSV_SUFFIXES = (".csv", ".csv.gz", ".txt", ".txt.gz", ".tsv", ".tsv.gz")
PARQUET_SUFFIXES = (".parquet", ".pq")


@dataclass(frozen=True)
class TableSpec:
    """Which columns to read, and how.

    Attributes:
        label: the label column (None: unlabelled).
        features: the feature columns, in order (None: every column but the label and client column).
        client_column: a column of client ids: its values become the natural clients.
        categorical: columns to treat as categories even when they hold numbers (codes, zip codes).
        missing: ``"error"`` (a missing value is an error) or ``"drop"`` (skip rows that miss one).
        column_names: the column names of CSV files without a header row (e.g. NSL-KDD).
        delimiter: the CSV field separator.
        format: ``"csv"`` or ``"parquet"`` for every file whatever its name; None: by each file's extension.
    """

    label: str | None = None
    features: tuple[str, ...] | None = None
    client_column: str | None = None
    categorical: tuple[str, ...] = ()
    missing: str = "error"
    column_names: tuple[str, ...] | None = None
    delimiter: str = ","
    format: str | None = None

    def __post_init__(self) -> None:
        if self.format not in (None, "csv", "parquet"):
            raise DataError(f"format = {self.format!r}: expected 'csv' or 'parquet' for a table")
        if self.missing not in ("error", "drop"):
            raise DataError(f"missing = {self.missing!r}: expected 'error' or 'drop'")
        if not isinstance(self.delimiter, str) or len(self.delimiter) != 1 or self.delimiter in '"\r\n':
            raise DataError(f"delimiter = {self.delimiter!r}: expected one character, not a quote or a line break")
        for name in ("features", "categorical", "column_names"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, tuple(value))


@dataclass(frozen=True)
class _Raw:
    """The columns of all files of one load, concatenated, with each row's origin."""

    columns: dict[str, np.ndarray]  # name -> object array of str / numbers / None
    file_of_row: np.ndarray
    line_of_row: np.ndarray
    files: tuple[Path, ...]

    def where(self, row: int, column: str | None = None) -> str:
        col = f", column {column!r}" if column is not None else ""
        return f"{self.files[self.file_of_row[row]]}:{self.line_of_row[row]}{col}"


def require(module: str, extra: str, what: str):
    """Import an optional library, or say which extra installs it.

    Raises:
        DataError: the library is not installed.
    """
    try:
        return importlib.import_module(module)
    except ImportError:
        raise DataError(
            f"{what} needs the {module} library, which is not installed: pip install 'hamrah[{extra}]'"
        ) from None


def table_files(source: str | os.PathLike | Sequence[str | os.PathLike]) -> tuple[Path, ...]:
    """Return the table files of ``source``: a file, a list of files, or a folder of them (sorted).

    Raises:
        DataError: a path does not exist, or a folder holds no CSV or Parquet file.
    """
    paths = [Path(source)] if isinstance(source, (str, os.PathLike)) else [Path(p) for p in source]
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.name.endswith(CSV_SUFFIXES + PARQUET_SUFFIXES))
            if not found:
                raise DataError(f"{p}: no CSV or Parquet files in this folder (expected *.csv, *.parquet)")
            out += found
        elif not p.is_file():
            raise DataError(f"{p}: no such file or folder")
        else:
            out.append(p)
    if not out:
        raise DataError("no table files given")
    return tuple(out)


def load_table(source, spec: TableSpec = TableSpec(), schema: Schema | None = None) -> Examples:
    """Load CSV or Parquet files (by extension) as examples.

    Args:
        source: a file, a folder of files, or a list of files; several files = one client each
            (unless ``spec.client_column`` names the clients).
        spec: the columns and the missing-value policy.
        schema: a schema to match (e.g. the training set's, for a test file): its fields are the
            columns read, its categories encode the text values.

    Returns:
        Examples with one scalar field per feature column and the label (int64 for whole numbers
        or text, float32 otherwise); groups = the files or the client-id values.

    Raises:
        DataError: one line naming the file, the row and the column: a file that cannot be read or
            holds no rows, a label or feature column that does not exist, files with different columns, a missing
            value under ``missing="error"``, a column mixing numbers and text, a value the schema
            does not allow.
    """
    files = table_files(source)
    raw = _concat([_read_file(f, spec) for f in files], files)
    label = schema.label if schema is not None else spec.label
    features = schema.features if schema is not None else spec.features
    used = _choose_columns(raw, label, features, spec.client_column)
    raw = _apply_missing(raw, used + ([spec.client_column] if spec.client_column else []), spec.missing)
    if len(raw.file_of_row) == 0:
        dropped = " once rows with a missing value were dropped" if spec.missing == "drop" else ""
        raise DataError(f"{', '.join(map(str, files))}: no rows{dropped}; expected at least one row under the header")
    fields, arrays = [], {}
    for name in used:
        declared = schema.field(name) if schema is not None else None
        field, values = _column(raw, name, name == label, name in spec.categorical, declared)
        fields.append(field)
        arrays[name] = values
    groups, group_names = _groups(raw, spec.client_column, files)
    where = str(files[0]) if len(files) == 1 else f"{files[0].parent} ({len(files)} files)"
    return Examples(Schema(tuple(fields), label) if schema is None else schema, arrays, groups, group_names, where)


def read_columns(path: str | os.PathLike, names: Sequence[str]) -> dict[str, list[str]]:
    """Return some columns of one CSV / Parquet file as written (text): ids to carry beside predictions.

    Raises:
        DataError: the file cannot be read, or has no column of one of ``names`` (the message lists its columns).
    """
    path = Path(path)
    header, columns, _ = _read_file(path, TableSpec())
    missing = [n for n in names if n not in columns]
    if missing:
        raise DataError(f"{path}: no column {missing[0]!r} (columns: {', '.join(header)})")
    return {n: [str(v) for v in columns[n]] for n in names}


def _read_file(path: Path, spec: TableSpec) -> tuple[list[str], dict[str, np.ndarray], int]:
    fmt = spec.format or (
        "parquet" if path.name.endswith(PARQUET_SUFFIXES) else "csv" if path.name.endswith(CSV_SUFFIXES) else None
    )
    if fmt == "parquet":
        header, cols = _read_parquet(path)
        return header, cols, np.arange(1, len(next(iter(cols.values()), ())) + 1)
    if fmt is None:
        raise DataError(f"{path}: unknown table format (expected {', '.join(CSV_SUFFIXES + PARQUET_SUFFIXES)})")
    try:
        raw = path.read_bytes()
        text = (gzip.decompress(raw) if path.name.endswith(".gz") else raw).decode("utf-8-sig")
    except (OSError, EOFError, gzip.BadGzipFile, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read the CSV ({e})") from None
    delimiter = "\t" if ".tsv" in path.name and spec.delimiter == "," else spec.delimiter
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)  # "": \r alone ends a line too
    try:  # each row with its line number (blank lines skipped), so messages name the right line
        numbered = [(r, reader.line_num) for r in reader if r]
    except csv.Error as e:  # e.g. a field longer than csv's limit
        raise DataError(f"{path}:{reader.line_num}: cannot read the CSV ({e})") from None
    rows, lines = [r for r, _ in numbered], [n for _, n in numbered]
    header = list(spec.column_names) if spec.column_names else [h.strip() for h in (rows[0] if rows else [])]
    body, lines = (rows, lines) if spec.column_names else (rows[1:], lines[1:])
    if not header:
        raise DataError(f"{path}: empty file (expected a header row, or give the column names)")
    check_printable(path, header)
    if len(set(header)) != len(header) or not all(header):
        raise DataError(f"{path}: a column name is empty or appears twice in {header}; expected distinct names")
    bad = next((i for i, r in enumerate(body) if len(r) != len(header)), None)
    if bad is not None:
        raise DataError(f"{path}:{lines[bad]}: {len(body[bad])} values, expected {len(header)} ({', '.join(header)})")
    table = np.array(body, dtype=object).reshape(len(body), len(header))
    columns = {h: np.array([v.strip() for v in table[:, i]], dtype=object) for i, h in enumerate(header)}
    return header, columns, np.array(lines, dtype=np.int64)


def _read_parquet(path: Path) -> tuple[list[str], dict[str, np.ndarray]]:
    pq = require("pyarrow.parquet", "data", f"{path}: reading Parquet")
    pa = require("pyarrow", "data", f"{path}: reading Parquet")
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as e:
        raise DataError(f"{path}: cannot read the Parquet file ({e})") from None
    check_printable(path, table.column_names)
    cols = {}
    for name, col in zip(table.column_names, table.columns):
        t = col.type
        if not (
            pa.types.is_integer(t)
            or pa.types.is_floating(t)
            or pa.types.is_boolean(t)
            or pa.types.is_string(t)
            or pa.types.is_large_string(t)
            or pa.types.is_dictionary(t)
        ):
            raise DataError(f"{path}: column {name!r} has type {t}, expected numbers, booleans or text")
        cols[name] = np.array(col.to_pylist(), dtype=object)
    return list(table.column_names), cols


def _concat(parts, files: tuple[Path, ...]) -> _Raw:
    header0 = parts[0][0]
    for f, (header, _, _) in zip(files, parts):
        if set(header) != set(header0):
            missing, extra = sorted(set(header0) - set(header)), sorted(set(header) - set(header0))
            raise DataError(
                f"{f}: its columns differ from {files[0]}'s"
                + (f"; missing {missing}" if missing else "")
                + (f"; extra {extra}" if extra else "")
            )
    cols = {h: np.concatenate([p[1][h] for p in parts]) for h in header0}
    sizes = [len(p[1][header0[0]]) for p in parts]
    file_of_row = np.repeat(np.arange(len(parts)), sizes)
    line = np.concatenate([p[2] for p in parts]).astype(np.int64)
    return _Raw(cols, file_of_row, line, files)


def check_printable(path, header: list[str]) -> None:
    """Refuse a column name holding a line break or another unprintable character (a quoted header field
    may): every message naming the columns would run over several lines."""
    bad = next((h for h in header if not h.isprintable()), None)
    if bad is not None:
        raise DataError(f"{path}: the column name {bad!r} holds an unprintable character; expected printable names")


def _choose_columns(raw: _Raw, label, features, client_column) -> list[str]:
    names = list(raw.columns)
    for role, col in (("label", label), ("client-id", client_column)):
        if col is not None and col not in raw.columns:
            raise DataError(f"{raw.files[0]}: no {role} column {col!r} (columns: {', '.join(names)})")
    if features is None:
        features = [c for c in names if c not in (label, client_column)]
    missing = [c for c in features if c not in raw.columns]
    if missing:
        raise DataError(f"{raw.files[0]}: no feature column {missing[0]!r} (columns: {', '.join(names)})")
    if label in features or (client_column is not None and client_column in features):
        raise DataError(f"{raw.files[0]}: the label / client-id column cannot also be a feature")
    if not features:
        raise DataError(f"{raw.files[0]}: no feature columns left (columns: {', '.join(names)})")
    return list(features) + ([label] if label is not None else [])


def _is_missing(values: np.ndarray) -> np.ndarray:
    return np.array(
        [v is None or (isinstance(v, str) and v in MISSING) or (isinstance(v, float) and v != v) for v in values],
        dtype=bool,
    )


def _apply_missing(raw: _Raw, used: list[str], policy: str) -> _Raw:
    holes = {c: _is_missing(raw.columns[c]) for c in used}
    if policy == "error":
        first = {c: int(np.flatnonzero(mask)[0]) for c, mask in holes.items() if mask.any()}
        if first:
            c = min(first, key=lambda k: (first[k], used.index(k)))
            row = first[c]
            raise DataError(
                f"{raw.where(row, c)}: missing value (missing='error': expected a value; "
                "or drop such rows with missing='drop')"
            )
        return raw
    keep = ~np.logical_or.reduce(list(holes.values())) if holes else np.ones(len(raw.file_of_row), bool)
    return _Raw({c: v[keep] for c, v in raw.columns.items()}, raw.file_of_row[keep], raw.line_of_row[keep], raw.files)


def _numbers(raw: _Raw, name: str) -> tuple[np.ndarray | None, int | None]:
    """Return the column as float64, or (None, the first row that is not a number)."""
    values = raw.columns[name]
    try:
        out = np.array([v if not isinstance(v, bool) else int(v) for v in values], dtype=np.float64)
    except (ValueError, TypeError):
        for i, v in enumerate(values):
            try:
                float(v)
            except (ValueError, TypeError):
                return None, i
        raise
    return out, None


def _column(raw: _Raw, name: str, is_label: bool, categorical: bool, declared: Field | None):
    values = raw.columns[name]
    if declared is not None and declared.categories is not None:
        return declared, _encode(raw, name, values, declared.categories)
    nums, bad = (None, 0) if categorical else _numbers(raw, name)
    if nums is None:
        text_rows = ~np.array([_is_number(v) for v in values], dtype=bool)
        if declared is not None or (not categorical and not text_rows.all()):
            expected = f"{declared.dtype} numbers" if declared is not None else "numbers like its other rows"
            raise DataError(
                f"{raw.where(bad, name)}: {values[bad]!r} is not a number (expected {expected}; "
                "a column mixing numbers and text must be declared categorical)"
            )
        cats = tuple(sorted({str(v) for v in values}))
        return Field(name, "int64", categories=cats), _encode(raw, name, values, cats)
    if not np.isfinite(nums).all():
        row = int(np.flatnonzero(~np.isfinite(nums))[0])
        raise DataError(f"{raw.where(row, name)}: {values[row]!r} is not a finite number")
    if declared is not None:
        if declared.dtype in ("int64", "int32", "uint8") and not np.array_equal(nums, np.round(nums)):
            row = int(np.flatnonzero(nums != np.round(nums))[0])
            raise DataError(
                f"{raw.where(row, name)}: {values[row]!r} is not a whole number (expected {declared.dtype})"
            )
        if declared.dtype == "bool" and not np.isin(nums, (0, 1)).all():
            row = int(np.flatnonzero(~np.isin(nums, (0, 1)))[0])
            raise DataError(f"{raw.where(row, name)}: {values[row]!r} is not 0 or 1 (expected bool)")
        return declared, _cast(raw, name, nums, declared.dtype)
    if is_label and len(nums) and np.array_equal(nums, np.round(nums)) and np.abs(nums).max() <= 2**53:
        return Field(name, "int64"), nums.astype(np.int64)  # beyond 2**53 a float64 cannot tell whole numbers
    return Field(name, "float32"), _cast(raw, name, nums, "float32")


def _cast(raw: _Raw, name: str, nums: np.ndarray, dtype: str) -> np.ndarray:
    """Return ``nums`` as ``dtype``, refusing a value it cannot hold (it would wrap round or become infinite)."""
    kind = np.dtype(dtype).kind
    if kind in "fiu":
        info = np.finfo(dtype) if kind == "f" else np.iinfo(dtype)
        lo, hi = float(info.min), float(info.max) + (kind != "f")  # an integer type holds values below max + 1
        out = np.flatnonzero((nums < lo) | (nums > hi if kind == "f" else nums >= hi))
        if out.size:
            row = int(out[0])
            raise DataError(
                f"{raw.where(row, name)}: {raw.columns[name][row]!r} is outside {dtype}'s range "
                f"(expected {info.min}..{info.max})"
            )
    return nums.astype(dtype)


def _is_number(v) -> bool:
    try:
        float(v)
        return True
    except (ValueError, TypeError):
        return False


def _encode(raw: _Raw, name: str, values: np.ndarray, cats: tuple[str, ...]) -> np.ndarray:
    index = {c: i for i, c in enumerate(cats)}
    codes = np.array([index.get(str(v), -1) for v in values], dtype=np.int64)
    if (codes < 0).any():
        row = int(np.flatnonzero(codes < 0)[0])
        shown = ", ".join(map(repr, cats[:8])) + (", ..." if len(cats) > 8 else "")
        raise DataError(f"{raw.where(row, name)}: unknown category {str(values[row])!r} (expected one of {shown})")
    return codes


def _groups(raw: _Raw, client_column: str | None, files: tuple[Path, ...]):
    if client_column is not None:
        values = np.array([str(v) for v in raw.columns[client_column]], dtype=object)
        names, ids = np.unique(values.astype(str), return_inverse=True)
        return ids.astype(np.int64), tuple(str(n) for n in names)
    if len(files) > 1:
        return raw.file_of_row.astype(np.int64), tuple(_stem(f) for f in files)
    return None, None


def _stem(path: Path) -> str:
    name = path.name
    for suffix in sorted(CSV_SUFFIXES + PARQUET_SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name
