"""Tables of one party in vertical FL: ids, features and (for the label holder) labels.

:func:`read_party_csv` reads any CSV with an id column, an optional label column and numeric
features (plain or gzipped); :func:`load_vertical` reads the bundled FATE splits (``breast``,
``default_credit``), verifying each file's sha256.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hamrah.core.errors import DataError
from hamrah.data.locate import candidate_dirs
from hamrah.data.tabular import check_printable

BUNDLED = {  # name -> party -> (file, sha256 of the CSV inside)
    "breast": {
        "guest": ("breast_hetero_guest.csv.gz", "6b258b1514181bd645ea37a9ba3795a014075f465dfa51af08ecf19f068baeae"),
        "host": ("breast_hetero_host.csv.gz", "8f9edc41763176ba12598f86646a177e347c1b85b5549896044f9532d964ea6f"),
    },
    "default_credit": {
        "guest": (
            "default_credit_hetero_guest.csv.gz",
            "4fd6be40766423cd4fd567f3ed4162f9ec512388a2eab2f265f46247c5ae90b0",
        ),
        "host": (
            "default_credit_hetero_host.csv.gz",
            "36880a1b1e6a5b85bcb1e7d8b58cb2b024b45422ec29881c8df562e17c4bc6b7",
        ),
    },
}


@dataclass(frozen=True)
class PartyTable:
    """One party's rows.

    Attributes:
        ids: ``int64`` sample ids, unique (for text ids: their :func:`id_digest`).
        features: ``float64`` matrix, one row per id.
        feature_names: the column names of ``features``.
        labels: ``float64`` labels (the label holder only), else ``None``.
        keys: the text ids as read (``id_type = "str"``), else ``None``.
    """

    ids: np.ndarray
    features: np.ndarray
    feature_names: tuple[str, ...]
    labels: np.ndarray | None = None
    keys: np.ndarray | None = None

    def id_text(self) -> list[str]:
        """Return each row's id as the party's file wrote it (text ids) or as a decimal integer."""
        return [str(k) for k in (self.keys if self.keys is not None else self.ids.tolist())]

    def select(self, ids: np.ndarray) -> PartyTable:
        """Return the rows of ``ids``, in that order.

        Raises:
            DataError: an id is not in this table.
        """
        order = np.argsort(self.ids)
        pos = np.searchsorted(self.ids, ids, sorter=order)
        pos = np.clip(pos, 0, len(order) - 1)
        rows = order[pos]
        missing = self.ids[rows] != ids
        if missing.any():
            raise DataError(f"{int(missing.sum())} ids (first: {int(ids[missing][0])}) are not in this table")
        return PartyTable(
            self.ids[rows],
            self.features[rows],
            self.feature_names,
            None if self.labels is None else self.labels[rows],
            None if self.keys is None else self.keys[rows],
        )


ID_TYPES = ("int", "str")


def id_digest(keys: list[str]) -> np.ndarray:
    """Return each text id's 64-bit BLAKE2b digest as a signed ``int64``: the same at every party.

    Two different ids share a digest with probability about ``n_a n_b / 2^64`` between parties of
    ``n_a`` and ``n_b`` ids (5e-6 at 1e7 x 1e7); a collision inside one file is refused when read.
    """
    return np.array(
        [
            int.from_bytes(
                hashlib.blake2b(k.encode(), digest_size=8, person=b"hamrah-id").digest(), "little", signed=True
            )
            for k in keys
        ],
        dtype=np.int64,
    )


def _ids(path: Path, column: str, raw: list[str], id_type: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Return the ids (and the text ids) of one file's id column."""
    if id_type not in ID_TYPES:
        raise DataError(f"id_type = {id_type!r}: expected one of {', '.join(ID_TYPES)}")
    keys = None
    if id_type == "str":
        keys, ids = np.array(raw, dtype=str), id_digest(raw)
        if len(set(raw)) == len(raw) and len(np.unique(ids)) != len(ids):
            raise DataError(f"{path}: two different ids of column {column!r} share a 64-bit digest; rename one")
    else:
        try:
            values = [int(v) if v.lstrip("-").isdigit() else float(v) for v in raw]
            if not all(isinstance(v, int) or (v.is_integer() and abs(v) < 2**53) for v in values):
                raise ValueError
            ids = np.array([int(v) for v in values], dtype=np.int64)
        except (ValueError, OverflowError):
            bad = next((v for v in raw if not v.lstrip("-").isdigit()), raw[0] if raw else "")
            raise DataError(
                f"{path}: column {column!r} must hold integer ids (found {bad!r}); for text ids set "
                '[data] id_type = "str" at every party'
            ) from None
    if len(np.unique(ids)) != len(ids):
        raise DataError(f"{path}: column {column!r} must hold unique ids ({len(ids) - len(np.unique(ids))} repeat)")
    return ids, keys


def _text(path: Path) -> str:
    raw = path.read_bytes()
    return (gzip.decompress(raw) if path.suffix == ".gz" else raw).decode("utf-8-sig")  # a spreadsheet's BOM too


def read_party_csv(
    path: str | os.PathLike,
    id_column: str = "id",
    label_column: str | None = None,
    text: str | None = None,
    label_optional: bool = False,
    id_type: str = "int",
) -> PartyTable:
    """Read one party's CSV.

    Args:
        path: a ``.csv`` or ``.csv.gz`` file with a header row.
        id_column: the column of sample ids.
        label_column: the label column (the label holder), or ``None``.
        text: the file's text when already read (``path`` then only names it in errors).
        label_optional: a file without ``label_column`` is read without labels (rows to score).
        id_type: ``"int"`` (integer ids, exact up to int64) or ``"str"`` (any text; joined by its
            :func:`id_digest`, every party must use the same).

    Raises:
        DataError: the file is missing, a column is absent, an id repeats or a value is not a number
            (an empty cell, or ``nan``, is a missing value: NaN).
    """
    path = Path(path)
    try:
        text = _text(path) if text is None else text
    except (OSError, EOFError, gzip.BadGzipFile, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read the CSV ({e})") from None
    reader = csv.reader(io.StringIO(text, newline=""))  # "": \r alone ends a line too
    try:  # each row with its line number (blank lines skipped)
        numbered = [(r, reader.line_num) for r in reader if r]
    except csv.Error as e:  # e.g. a field longer than csv's limit
        raise DataError(f"{path}:{reader.line_num}: cannot read the CSV ({e})") from None
    if not numbered:
        raise DataError(f"{path}: empty file (expected a header row)")
    header = [h.strip() for h in numbered[0][0]]
    check_printable(path, header)
    if len(set(header)) != len(header):
        raise DataError(f"{path}: a column name appears twice in {header}; expected distinct names")
    if label_column == id_column:
        raise DataError(f"{path}: the label column is the id column {id_column!r}; expected two columns")
    if label_optional and label_column not in header:
        label_column = None
    for col in (id_column, label_column):
        if col is not None and col not in header:
            raise DataError(f"{path}: no column {col!r} (columns: {', '.join(header)})")
    body, lines = [r for r, _ in numbered[1:]], [n for _, n in numbered[1:]]
    bad = next((i for i, r in enumerate(body) if len(r) != len(header)), None)
    if bad is not None:
        raise DataError(f"{path}:{lines[bad]}: {len(body[bad])} values, expected {len(header)}")
    at = header.index(id_column)
    ids, keys = _ids(path, id_column, [r[at].strip() for r in body], id_type)
    numeric = [i for i in range(len(header)) if i != at]
    try:
        cells = [[r[i].strip() or "nan" for i in numeric] for r in body]  # an empty cell is a missing value
        table = np.array(cells, dtype=np.float64).reshape(len(body), len(numeric))
    except ValueError as e:
        raise DataError(f"{path}: expected numbers in every column but the id column ({e})") from None
    if np.isinf(table).any():  # NaN is a missing value; infinity is not a value
        row, col = (int(v[0]) for v in np.nonzero(np.isinf(table)))
        raise DataError(f"{path}:{lines[row]}, column {header[numeric[col]]!r}: not a finite number")
    names = [header[i] for i in numeric]
    feats = [j for j, h in enumerate(names) if h != label_column]
    labels = None if label_column is None else table[:, names.index(label_column)].copy()
    return PartyTable(ids, table[:, feats].copy(), tuple(names[j] for j in feats), labels, keys)


def load_vertical(name: str, path: str | os.PathLike | None = None) -> dict[str, PartyTable]:
    """Load a bundled vertical split: ``{"guest": table with labels "y", "host": table}``.

    Raises:
        DataError: unknown name, missing file or a checksum mismatch.
    """
    if name not in BUNDLED:
        raise DataError(f"unknown vertical data set {name!r} (expected one of {sorted(BUNDLED)})")
    out = {}
    for party, (file, sha) in BUNDLED[name].items():
        found = next((d / file for d in candidate_dirs("vertical", path) if (d / file).is_file()), None)
        if found is None:
            raise DataError(f"{file} not found in {[str(d) for d in candidate_dirs('vertical', path)]}")
        text = _text(found)
        if hashlib.sha256(text.encode()).hexdigest() != sha:
            raise DataError(f"{found}: checksum mismatch (expected sha256 {sha} of the CSV inside)")
        out[party] = read_party_csv(found, label_column="y" if party == "guest" else None, text=text)
    return out


__all__ = ["ID_TYPES", "PartyTable", "id_digest", "load_vertical", "read_party_csv"]
