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
        ids: ``int64`` sample ids, unique.
        features: ``float64`` matrix, one row per id.
        feature_names: the column names of ``features``.
        labels: ``float64`` labels (the label holder only), else ``None``.
    """

    ids: np.ndarray
    features: np.ndarray
    feature_names: tuple[str, ...]
    labels: np.ndarray | None = None

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
            self.ids[rows], self.features[rows], self.feature_names, None if self.labels is None else self.labels[rows]
        )


def _text(path: Path) -> str:
    raw = path.read_bytes()
    return gzip.decompress(raw).decode() if path.suffix == ".gz" else raw.decode()


def read_party_csv(
    path: str | os.PathLike,
    id_column: str = "id",
    label_column: str | None = None,
    text: str | None = None,
    label_optional: bool = False,
) -> PartyTable:
    """Read one party's CSV.

    Args:
        path: a ``.csv`` or ``.csv.gz`` file with a header row.
        id_column: the column of integer sample ids.
        label_column: the label column (the label holder), or ``None``.
        text: the file's text when already read (``path`` then only names it in errors).
        label_optional: a file without ``label_column`` is read without labels (rows to score).

    Raises:
        DataError: the file is missing, a column is absent, an id repeats or a value is not a number.
    """
    path = Path(path)
    try:
        text = _text(path) if text is None else text
    except (OSError, EOFError, gzip.BadGzipFile, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read the CSV ({e})") from None
    rows = list(csv.reader(io.StringIO(text)))
    if not rows:
        raise DataError(f"{path}: empty file (expected a header row)")
    header = [h.strip() for h in rows[0]]
    if label_optional and label_column not in header:
        label_column = None
    for col in (id_column, label_column):
        if col is not None and col not in header:
            raise DataError(f"{path}: no column {col!r} (columns: {', '.join(header)})")
    body = [r for r in rows[1:] if r]
    if any(len(r) != len(header) for r in body):
        bad = next(i for i, r in enumerate(body, 2) if len(r) != len(header))
        raise DataError(f"{path}:{bad}: {len(body[bad - 2])} values, expected {len(header)}")
    try:
        table = np.array(body, dtype=np.float64).reshape(len(body), len(header))
    except ValueError as e:
        raise DataError(f"{path}: expected numbers in every column ({e})") from None
    ids = table[:, header.index(id_column)]
    if not np.array_equal(ids, np.round(ids)) or len(np.unique(ids)) != len(ids):
        raise DataError(f"{path}: column {id_column!r} must hold unique integer ids")
    feats = [i for i, h in enumerate(header) if h not in (id_column, label_column)]
    labels = None if label_column is None else table[:, header.index(label_column)].copy()
    return PartyTable(ids.astype(np.int64), table[:, feats].copy(), tuple(header[i] for i in feats), labels)


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
