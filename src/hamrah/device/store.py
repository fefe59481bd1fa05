"""The Example Store: a device's training examples in an SQLite database, never leaving the device.

Every record holds the named fields of one example under the store's declared
:class:`~hamrah.data.schema.Schema` (kept as JSON in the ``meta`` table), with a timestamp and an
optional time-to-live. The app adds records as they happen (:meth:`ExampleStore.append`: the
movie-recommender writes one when the user reacts); the FL runtime counts and reads the live ones.
A record's fields are packed in schema order into one blob (numpy's structured layout of
:meth:`Schema.record_dtype`), so a batch decodes with one ``frombuffer``.

Stores written by hamrah before named fields (one ``examples`` table with ``x`` and ``y`` blobs)
still open: they read and write as the schema ``x, y (label)``; an empty one is upgraded in place.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from hamrah.core.errors import DataError
from hamrah.core.params import Params
from hamrah.data.examples import Examples
from hamrah.data.federated import ArrayData
from hamrah.data.schema import Field, Schema
from hamrah.device.store_checks import check_ttl as check_ttl
from hamrah.device.store_checks import sqlite_checked
from hamrah.transport.codec import decode_params, encode_params

FORMAT = "2"
_TABLES = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runtime (key TEXT PRIMARY KEY, value BLOB NOT NULL);
"""
_RECORDS = """
CREATE TABLE IF NOT EXISTS records (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    record BLOB NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL
);
CREATE INDEX IF NOT EXISTS records_expiry ON records (expires_at);
"""
_LIVE = "(expires_at IS NULL OR expires_at > ?)"


class ExampleStore:
    """An on-device example store backed by SQLite.

    Args:
        path: the SQLite file (created if missing).
        schema: the schema the task declares: written into a new store, checked against an
            existing one. None: take the store's own (or, for ``add_many``, fix it on first write).

    Raises:
        DataError: not an SQLite example store, a store of another schema, or of a newer format.

    Example:
        >>> from hamrah.data.schema import Field, Schema
        >>> schema = Schema((Field("movie", "int64"), Field("liked", "int64")), label="liked")
        >>> with ExampleStore(":memory:", schema) as store:
        ...     store.append({"movie": 17, "liked": 1}, ttl_s=30 * 86400)
        ...     store.examples()["movie"].tolist()
        [17]
    """

    def __init__(self, path: str | Path, schema: Schema | None = None):
        self.path = Path(path)
        try:
            self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
            found = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if found and not found & {"meta", "records", "examples"}:  # someone else's database: left alone
                raise sqlite3.DatabaseError(f"it holds other tables ({', '.join(sorted(found)[:5])}), not a store's")
            self._db.executescript(_TABLES)
            tables = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            meta = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
            self._legacy = "examples" in tables and not self._upgrade_empty_legacy(meta)
            if not self._legacy:
                self._db.executescript(_RECORDS)
        except sqlite3.DatabaseError as e:
            raise DataError(f"{self.path}: not a usable example store ({e})") from None
        self._schema = self._read_schema(meta)
        if schema is not None:
            self.declare(schema)

    def _upgrade_empty_legacy(self, meta: dict) -> bool:
        """Turn an old-format store that never held an example into the current format."""
        if self._db.execute("SELECT COUNT(*) FROM examples").fetchone()[0]:
            return False
        with self._db:
            self._db.execute("DROP TABLE examples")
            self._db.execute("DELETE FROM meta")
        meta.clear()
        return True

    def _read_schema(self, meta: dict) -> Schema | None:
        if self._legacy:
            if not meta:
                return None
            shape = [tuple(int(v) for v in meta[k].split(",") if v) for k in ("x_shape", "y_shape")]
            return Schema((Field("x", meta["x_dtype"], shape[0]), Field("y", meta["y_dtype"], shape[1])), label="y")
        if meta.get("format", FORMAT) != FORMAT:
            raise DataError(
                f"{self.path}: example store format {meta['format']!r}, this hamrah reads format "
                f"{FORMAT}; upgrade hamrah or rebuild the store with `hamrah store import`"
            )
        return Schema.from_json(meta["schema"], f"{self.path}: schema") if "schema" in meta else None

    @property
    def schema(self) -> Schema | None:
        """The store's schema, or None before it is declared."""
        return self._schema

    def declare(self, schema: Schema) -> None:
        """Fix the store's schema (a new store), or check that it is the store's.

        Raises:
            DataError: the store holds another schema (says how to rebuild it).
        """
        if self._schema is not None:
            if self._schema != schema:
                raise DataError(
                    f"{self.path}: the store's records are ({self._schema.describe()}), expected "
                    f"({schema.describe()}); rebuild it with `hamrah store import --store NEW_PATH`"
                )
            return
        if self._legacy:
            raise DataError(
                f"{self.path}: an old-format store (x/y columns) cannot take the schema "
                f"({schema.describe()}); rebuild it with `hamrah store import --store NEW_PATH`"
            )
        with self._db:
            self._db.executemany(
                "INSERT OR REPLACE INTO meta VALUES (?, ?)", [("format", FORMAT), ("schema", schema.to_json())]
            )
        self._schema = schema

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> ExampleStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- writing -------------------------------------------------------------------------------

    def append(self, record: Mapping[str, Any], timestamp: float | None = None, ttl_s: float | None = None) -> None:
        """Add one example as it happens (e.g. when the user reacts), with an optional time-to-live.

        Raises:
            DataError: the record does not match the schema (names the field and what was expected).
        """
        if not isinstance(record, Mapping):
            raise DataError(f"{self.path}: a record is a mapping of field name to value, got {type(record).__name__}")
        self.append_many({k: [v] for k, v in record.items()}, timestamp, ttl_s)

    def append_many(
        self,
        columns: Mapping[str, Any],
        timestamp: float | None = None,
        ttl_s: float | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Add a batch of examples in one transaction: all of them, or none on any error.

        Args:
            columns: field name -> values of every example (text is accepted for categorical fields).
            timestamp: the creation time (default: now).
            ttl_s: seconds until the examples expire (None: never).
            progress: called with the number of examples written so far, every 10,000.

        Returns:
            The number of examples added.

        Raises:
            DataError: no schema declared, a field that does not match it, or a bad time-to-live.
        """
        if self._schema is None:
            raise DataError(
                f"{self.path}: no schema declared; open the store with the task's schema "
                "(ExampleStore(path, schema)) before adding records"
            )
        records = self._pack(self._schema.check(columns, f"{self.path}: record"))
        self._insert(records, timestamp, ttl_s, progress)
        return len(records)

    def _pack(self, arrays: dict[str, np.ndarray]) -> np.ndarray:
        n = len(next(iter(arrays.values())))
        records = np.empty(n, dtype=self._schema.record_dtype())
        for name, values in arrays.items():
            records[name] = values
        return records

    @sqlite_checked
    def _insert(
        self, records: np.ndarray, timestamp: float | None, ttl_s: float | None, progress: Callable[[int], None] | None
    ) -> None:
        check_ttl(ttl_s)
        now = time.time() if timestamp is None else float(timestamp)
        expires = None if ttl_s is None else now + ttl_s
        self._db.execute("BEGIN")
        try:
            for start in range(0, len(records), 10_000):
                chunk = records[start : start + 10_000]
                if self._legacy:
                    rows = [(r["x"].tobytes(), r["y"].tobytes(), now, expires) for r in chunk]
                    sql = "INSERT INTO examples (x, y, created_at, expires_at) VALUES (?, ?, ?, ?)"
                else:
                    rows = [(r.tobytes(), now, expires) for r in chunk]
                    sql = "INSERT INTO records (record, created_at, expires_at) VALUES (?, ?, ?)"
                self._db.executemany(sql, rows)
                if progress is not None:
                    progress(start + len(chunk))
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def add_many(
        self, xs: np.ndarray, ys: np.ndarray, timestamp: float | None = None, ttl_s: float | None = None
    ) -> int:
        """Add examples ``(xs[i], ys[i])`` to a store of schema ``x, y (label)``, in one transaction.

        The first write to a store without a schema fixes it from ``xs[0]`` and ``ys[0]``
        (float64 features are stored as float32).
        """
        xs, ys = np.asarray(xs), np.asarray(ys)
        if len(xs) != len(ys):
            raise DataError(f"add_many: {len(xs)} feature rows but {len(ys)} labels")
        if len(xs) == 0:
            return 0
        if xs.dtype == np.float64:
            xs = xs.astype(np.float32)
        if self._schema is None:
            self.declare(
                Schema((Field("x", xs.dtype.name, xs.shape[1:]), Field("y", ys.dtype.name, ys.shape[1:])), label="y")
            )
        return self.append_many({"x": xs, "y": ys}, timestamp, ttl_s)

    def add(self, x: np.ndarray, y, timestamp: float | None = None, ttl_s: float | None = None) -> None:
        """Add one ``(x, y)`` example (see :meth:`add_many`)."""
        self.add_many(np.asarray(x)[None], np.asarray(y)[None], timestamp, ttl_s)

    @sqlite_checked
    def expire(self, now: float | None = None) -> int:
        """Delete examples whose time-to-live has passed; return how many were deleted."""
        now = time.time() if now is None else now
        with self._db:
            cur = self._db.execute(
                f"DELETE FROM {self._table} WHERE expires_at IS NOT NULL AND expires_at <= ?", (now,)
            )
        return cur.rowcount

    # ---- reading -------------------------------------------------------------------------------

    @property
    def _table(self) -> str:
        return "examples" if self._legacy else "records"

    @sqlite_checked
    def count(self, now: float | None = None) -> int:
        """Return the number of live (unexpired) examples."""
        now = time.time() if now is None else now
        return int(self._db.execute(f"SELECT COUNT(*) FROM {self._table} WHERE {_LIVE}", (now,)).fetchone()[0])

    @sqlite_checked
    def iter_examples(self, batch_size: int, now: float | None = None) -> Iterator[Examples]:
        """Yield the live examples in insertion order, ``batch_size`` at a time."""
        now = time.time() if now is None else now
        cols = "x, y" if self._legacy else "record"
        q = f"SELECT id, {cols} FROM {self._table} WHERE id > ? AND {_LIVE} ORDER BY id LIMIT ?"
        last = 0
        while True:
            rows = self._db.execute(q, (last, now, batch_size)).fetchall()
            if not rows:
                return
            last = rows[-1][0]
            yield self._decode([b"".join(r[1:]) for r in rows])

    def _decode(self, blobs: list[bytes]) -> Examples:
        if self._schema is None:
            raise DataError(f"{self.path}: records but no schema in the meta table (a damaged store); rebuild it")
        dtype = self._schema.record_dtype()
        if any(len(b) != dtype.itemsize for b in blobs):
            raise DataError(
                f"{self.path}: corrupt records (expected {dtype.itemsize} bytes each for {self._schema.describe()})"
            )
        arr = np.frombuffer(b"".join(blobs), dtype=dtype)
        return Examples(self._schema, {name: arr[name] for name in self._schema.names}, source=str(self.path))

    def examples(self, now: float | None = None) -> Examples:
        """Return every live example under the store's schema.

        Raises:
            DataError: the store has no schema yet.
        """
        parts = list(self.iter_examples(4096, now))
        if not parts:
            if self._schema is None:
                raise DataError(f"{self.path}: the example store is empty and has no schema")
            return Examples(
                self._schema,
                {f.name: np.zeros((0, *f.shape), f.dtype) for f in self._schema.fields},
                source=str(self.path),
            )
        return Examples(
            self._schema, {n: np.concatenate([p[n] for p in parts]) for n in self._schema.names}, source=str(self.path)
        )

    def batches(self, batch_size: int, now: float | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield live examples in insertion order as (features, labels) arrays (see ``Examples.to_array_data``)."""
        for part in self.iter_examples(batch_size, now):
            data = part.to_array_data()
            yield data.x.numpy(), data.y.numpy()

    def read_all(self, now: float | None = None) -> ArrayData:
        """Return every live example as ``(x, y)`` tensors, the form today's client code trains on.

        Raises:
            DataError: the store holds no live example.
        """
        if self.count(now) == 0:
            raise DataError(f"{self.path}: the example store is empty")
        return self.examples(now).to_array_data()

    # ---- runtime state -------------------------------------------------------------------------

    @sqlite_checked
    def client_state(self) -> Params | None:
        """Return the algorithm state this client kept from its last round (SCAFFOLD's c_i), or None."""
        row = self._db.execute("SELECT value FROM runtime WHERE key = 'client_state'").fetchone()
        return None if row is None else decode_params(row[0], what=f"{self.path}: client state")

    @sqlite_checked
    def save_client_state(self, state: Params) -> None:
        """Keep the algorithm's client state for this client's next round (atomically)."""
        with self._db:
            self._db.execute("INSERT OR REPLACE INTO runtime VALUES ('client_state', ?)", (encode_params(state),))

    @sqlite_checked
    def privacy_spent(self) -> list[tuple[dict, int]]:
        """Return the DP-SGD privacy events these examples have been trained with, ``[(RoundSpec as a
        dict, count)]`` (every run on this store: the examples are the same)."""
        row = self._db.execute("SELECT value FROM runtime WHERE key = 'privacy_spent'").fetchone()
        if row is None:
            return []
        try:
            return [(dict(spec), int(count)) for spec, count in json.loads(row[0])]
        except (ValueError, TypeError) as e:
            raise DataError(
                f"{self.path}: the privacy ledger is corrupt ({e}); expected [[spec, count], ...]"
            ) from None

    @sqlite_checked
    def charge_privacy(self, events: list[tuple[dict, int]]) -> None:
        """Add one local training's DP-SGD events to the ledger (atomically)."""
        spent = self.privacy_spent() + [(dict(spec), int(count)) for spec, count in events]
        with self._db:
            self._db.execute("INSERT OR REPLACE INTO runtime VALUES ('privacy_spent', ?)", (json.dumps(spent),))


@contextmanager
def new_store(path: str | Path, schema: Schema | None = None) -> Iterator[ExampleStore]:
    """Open a new store that appears at ``path`` only once the ``with`` block succeeds: its folders made
    first (DataError naming the folder if they cannot be), written as ``PATH.partial``, renamed at the
    end, removed on any error."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"{path.parent}: cannot make the store's folder ({e.strerror or e})") from None
    tmp = path.with_name(path.name + ".partial")
    tmp.unlink(missing_ok=True)
    try:
        with ExampleStore(tmp, schema) as store:
            yield store
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def import_partition(path: str | Path, data: ArrayData, ttl_s: float | None = None) -> int:
    """Fill a new store at ``path`` with ``data`` (e.g. one client of a partition); return the count.
    DataError: ``path`` exists, or a bad ``ttl_s`` (checked before anything is written)."""
    path = Path(path)
    if path.exists():
        raise DataError(f"{path}: already exists; choose a new store path")
    check_ttl(ttl_s)
    with new_store(path) as store:
        return store.add_many(data.x.numpy(), data.y.numpy(), ttl_s=ttl_s)
