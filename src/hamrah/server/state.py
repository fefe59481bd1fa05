"""Durable server state: each committed round's checkpoint and record, so a crash loses at most the
round in flight.

Layout of ``--state DIR``: ``state.db`` (SQLite: the run's config and one row per committed round),
``checkpoints/round_NNNNNN.safetensors`` (global weights and the algorithm's server state),
``metrics.jsonl`` and ``summary.json`` (rewritten from the database after every commit).

A commit writes the checkpoint to a temporary file, fsyncs it, renames it into place, then inserts
the round row in one transaction: the row is the commit point. A checkpoint without a row (a crash
in between) is ignored and overwritten when the round is repeated.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path

from hamrah.core.errors import ConfigError, DataError
from hamrah.core.params import Params
from hamrah.transport.codec import decode_params, encode_params, sha256

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS rounds (
    round INTEGER PRIMARY KEY,
    checkpoint TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    record TEXT NOT NULL,
    server_state TEXT NOT NULL,
    committed_at REAL NOT NULL
);
"""
_STATE_PREFIX = "server_state/"


def _write_durable(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ServerStore:
    """The ``--state`` folder of one server run."""

    def __init__(self, directory: str | Path, config: dict):
        self.dir = Path(directory)
        (self.dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(self.dir / "state.db", isolation_level=None, check_same_thread=False)
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as e:
            raise DataError(f"{self.dir / 'state.db'}: not a hamrah server state database ({e})") from None
        self._bind_config(config)

    def _bind_config(self, config: dict) -> None:
        """Record the run's config, or refuse a state folder made by a different run."""
        text = json.dumps(config, sort_keys=True)
        row = self._db.execute("SELECT value FROM meta WHERE key = 'config'").fetchone()
        if row is None:
            with self._db:
                self._db.execute("INSERT INTO meta VALUES ('config', ?)", (text,))
            return
        old = json.loads(row[0])
        keys = ("data", "model", "algorithm")
        changed = [k for k in keys if old.get(k) != config.get(k)]
        if changed:
            raise ConfigError(
                f"--state {self.dir}: made by a run with a different [{'], ['.join(changed)}] section; "
                "use a new state folder or the original config"
            )

    def close(self) -> None:
        self._db.close()

    def committed_rounds(self) -> list[dict]:
        """Return the records of every committed round, in order."""
        rows = self._db.execute("SELECT record FROM rounds ORDER BY round").fetchall()
        return [json.loads(r[0]) for r in rows]

    def latest(self) -> tuple[int, Params, Params, dict] | None:
        """Return (round, global params, server state tensors, server state scalars) of the last
        committed round, or None.

        Raises:
            DataError: the checkpoint file is missing or does not match its recorded sha256.
        """
        row = self._db.execute(
            "SELECT round, checkpoint, sha256, server_state FROM rounds ORDER BY round DESC LIMIT 1").fetchone()
        if row is None:
            return None
        path = self.dir / "checkpoints" / row[1]
        try:
            data = path.read_bytes()
        except OSError as e:
            raise DataError(f"{path}: checkpoint of committed round {row[0]} unreadable ({e.strerror})") from None
        if sha256(data) != row[2]:
            raise DataError(f"{path}: checkpoint of committed round {row[0]} does not match its sha256")
        tensors = decode_params(data, what=str(path))
        params = {k: v for k, v in tensors.items() if not k.startswith(_STATE_PREFIX)}
        state = {k[len(_STATE_PREFIX):]: v for k, v in tensors.items() if k.startswith(_STATE_PREFIX)}
        return int(row[0]), params, state, json.loads(row[3])

    def commit(self, round_idx: int, params: Params, server_state: Params, scalars: dict, record: dict) -> None:
        """Make round ``round_idx`` durable: checkpoint first, then its row (the commit point)."""
        name = f"round_{round_idx:06d}.safetensors"
        tensors = dict(params)
        tensors.update({_STATE_PREFIX + k: v for k, v in server_state.items()})
        data = encode_params(tensors)
        _write_durable(self.dir / "checkpoints" / name, data)
        with self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO rounds VALUES (?, ?, ?, ?, ?, ?)",
                (round_idx, name, sha256(data), json.dumps(record), json.dumps(scalars), time.time()),
            )
        self._write_reports()

    def _write_reports(self) -> None:
        records = self.committed_rounds()
        lines = "".join(json.dumps(r) + "\n" for r in records)
        _write_durable(self.dir / "metrics.jsonl", lines.encode("utf-8"))

    def write_summary(self, summary: dict) -> None:
        _write_durable(self.dir / "summary.json", (json.dumps(summary, indent=2) + "\n").encode("utf-8"))
