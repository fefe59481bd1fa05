"""The Example Store: a device's training examples in an SQLite database, never leaving the device.

The app adds examples (features and label, with a timestamp and an optional time-to-live); the FL
runtime counts and reads them in batches. Every example of one store has the same feature and label
shape and dtype, fixed by the first write and kept in the ``meta`` table.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from hamrah.core.errors import DataError
from hamrah.core.params import Params
from hamrah.data.federated import ArrayData
from hamrah.transport.codec import decode_params, encode_params

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS examples (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    x BLOB NOT NULL,
    y BLOB NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL
);
CREATE INDEX IF NOT EXISTS examples_expiry ON examples (expires_at);
CREATE TABLE IF NOT EXISTS runtime (key TEXT PRIMARY KEY, value BLOB NOT NULL);
"""
_DTYPES = {"float32": np.float32, "int64": np.int64}


class ExampleStore:
    """An on-device example store backed by SQLite.

    Example:
        >>> store = ExampleStore("device.db")  # doctest: +SKIP
        >>> store.add(np.zeros((1, 28, 28), np.float32), 7)  # doctest: +SKIP
        >>> store.count()  # doctest: +SKIP
        1
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as e:
            raise DataError(f"{self.path}: not a usable example store ({e})") from None
        self._meta = dict(self._db.execute("SELECT key, value FROM meta").fetchall())

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> ExampleStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _layout(self, x: np.ndarray, y: np.ndarray) -> None:
        """Fix the store's shapes and dtypes on first write; refuse examples that do not match them."""
        layout = {"x_shape": ",".join(map(str, x.shape)), "x_dtype": str(x.dtype),
                  "y_shape": ",".join(map(str, y.shape)), "y_dtype": str(y.dtype)}
        for key in ("x_dtype", "y_dtype"):
            if layout[key] not in _DTYPES:
                raise DataError(f"example {key[0]} has dtype {layout[key]}: expected one of {', '.join(_DTYPES)}")
        if not self._meta:
            with self._db:
                self._db.executemany("INSERT INTO meta VALUES (?, ?)", layout.items())
            self._meta = layout
        elif any(self._meta[k] != v for k, v in layout.items()):
            raise DataError(f"{self.path}: example layout {layout} differs from the store's {self._meta}")

    def add_many(self, xs: np.ndarray, ys: np.ndarray, timestamp: float | None = None, ttl_s: float | None = None) -> int:
        """Add examples (``xs[i]``, ``ys[i]``) in one transaction; return how many were added."""
        xs, ys = np.asarray(xs), np.asarray(ys)
        if len(xs) != len(ys):
            raise DataError(f"add_many: {len(xs)} feature rows but {len(ys)} labels")
        if len(xs) == 0:
            return 0
        if xs.dtype == np.float64:
            xs = xs.astype(np.float32)
        self._layout(xs[0], ys[0])
        now = time.time() if timestamp is None else timestamp
        expires = None if ttl_s is None else now + ttl_s
        rows = [(np.ascontiguousarray(x).tobytes(), np.ascontiguousarray(y).tobytes(), now, expires) for x, y in zip(xs, ys)]
        self._db.execute("BEGIN")
        try:
            self._db.executemany("INSERT INTO examples (x, y, created_at, expires_at) VALUES (?, ?, ?, ?)", rows)
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        return len(rows)

    def add(self, x: np.ndarray, y, timestamp: float | None = None, ttl_s: float | None = None) -> None:
        """Add one example."""
        self.add_many(np.asarray(x)[None], np.asarray(y)[None], timestamp, ttl_s)

    def expire(self, now: float | None = None) -> int:
        """Delete examples whose time-to-live has passed; return how many were deleted."""
        now = time.time() if now is None else now
        with self._db:
            cur = self._db.execute("DELETE FROM examples WHERE expires_at IS NOT NULL AND expires_at <= ?", (now,))
        return cur.rowcount

    def count(self, now: float | None = None) -> int:
        """Return the number of live (unexpired) examples."""
        now = time.time() if now is None else now
        q = "SELECT COUNT(*) FROM examples WHERE expires_at IS NULL OR expires_at > ?"
        return int(self._db.execute(q, (now,)).fetchone()[0])

    def _decode(self, rows: list[tuple[bytes, bytes]]) -> tuple[np.ndarray, np.ndarray]:
        m = self._meta
        shapes = [tuple(int(v) for v in m[k].split(",") if v) for k in ("x_shape", "y_shape")]
        dts = [_DTYPES[m[k]] for k in ("x_dtype", "y_dtype")]
        try:
            x = np.frombuffer(b"".join(r[0] for r in rows), dts[0]).reshape(len(rows), *shapes[0])
            y = np.frombuffer(b"".join(r[1] for r in rows), dts[1]).reshape(len(rows), *shapes[1])
        except ValueError as e:
            raise DataError(f"{self.path}: corrupt example rows ({e})") from None
        return x, y

    def batches(self, batch_size: int, now: float | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield live examples in insertion order as (features, labels) arrays of up to ``batch_size``."""
        now = time.time() if now is None else now
        last = 0
        q = "SELECT id, x, y FROM examples WHERE id > ? AND (expires_at IS NULL OR expires_at > ?) ORDER BY id LIMIT ?"
        while True:
            rows = self._db.execute(q, (last, now, batch_size)).fetchall()
            if not rows:
                return
            last = rows[-1][0]
            yield self._decode([(r[1], r[2]) for r in rows])

    def read_all(self, now: float | None = None) -> ArrayData:
        """Return every live example as tensors, the form the shared client code trains on."""
        xs, ys = [], []
        for x, y in self.batches(4096, now):
            xs.append(x)
            ys.append(y)
        if not xs:
            raise DataError(f"{self.path}: the example store is empty")
        return ArrayData(torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys)))


    def client_state(self) -> Params | None:
        """Return the algorithm state this client kept from its last round (SCAFFOLD's c_i), or None."""
        row = self._db.execute("SELECT value FROM runtime WHERE key = 'client_state'").fetchone()
        return None if row is None else decode_params(row[0], what=f"{self.path}: client state")

    def save_client_state(self, state: Params) -> None:
        """Keep the algorithm's client state for this client's next round (atomically)."""
        with self._db:
            self._db.execute("INSERT OR REPLACE INTO runtime VALUES ('client_state', ?)", (encode_params(state),))


def import_partition(path: str | Path, data: ArrayData, ttl_s: float | None = None) -> int:
    """Fill a new store at ``path`` with ``data`` (e.g. one client of a partition); return the count."""
    path = Path(path)
    if path.exists():
        raise DataError(f"{path}: already exists; choose a new store path")
    tmp = path.with_name(path.name + ".partial")
    tmp.unlink(missing_ok=True)
    with ExampleStore(tmp) as store:
        n = store.add_many(data.x.numpy(), data.y.numpy(), ttl_s=ttl_s)
    tmp.replace(path)
    return n
