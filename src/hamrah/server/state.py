"""Durable server state: each committed round's checkpoint and record, so a crash loses at most the
round in flight.

Layout of ``--state DIR``: ``state.db`` (SQLite: the run's config and one row per committed round),
``checkpoints/round_NNNNNN.safetensors`` (global weights and the algorithm's server state),
``metrics.jsonl`` and ``summary.json`` (rewritten from the database after every commit).

A commit writes the checkpoint to a temporary file, fsyncs it, renames it into place, then inserts
the round row in one transaction: the row is the commit point. A checkpoint without a row (a crash
in between) is ignored and overwritten when the round is repeated; a temporary file a crash left
(``*.tmp``) is deleted when the next server opens the folder.

One server at a time: the folder is locked (``hamrah.server.durability.StateLock``). A last
checkpoint that is missing or corrupt is skipped for the newest valid one (its newer rows are
dropped, so those rounds are repeated). Retention keeps the newest ``keep_last`` checkpoints and the
best one. Records are written as standard JSON (a non-finite number becomes null). Run totals
(``wall_s``, refusal counters) are saved with each round row, so they survive restarts.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from pathlib import Path

from hamrah.core.errors import ConfigError, DataError
from hamrah.core.files import write_atomic
from hamrah.core.params import Params
from hamrah.core.records import RoundRecord, finite_json, record_line
from hamrah.server.durability import StateLock, checkpoints_to_delete
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
log = logging.getLogger("hamrah.server")


class ServerStore:
    """The ``--state`` folder of one server run."""

    def __init__(
        self, directory: str | Path, config: dict, *, keep_last: int = 0, keep_best: bool = True, lock: bool = True
    ):
        """Open (or create) a state folder.

        Args:
            directory: the ``--state`` folder.
            config: the run's config (its data, model and algorithm sections must match the folder's).
            keep_last, keep_best: checkpoint retention (``durability.checkpoints_to_delete``; 0: keep all).
            lock: take the single-writer lock (False: read the folder only, e.g. in tests and reports).

        Raises:
            ConfigError: another server holds the folder, or it was made by a different run.
            DataError: ``state.db`` is not a hamrah state database.
        """
        self.dir = Path(directory)
        (self.dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        self.keep_last, self.keep_best = keep_last, keep_best
        self._lock = StateLock(self.dir).acquire() if lock else None
        if lock:
            self._remove_half_written()
        try:
            self._db = sqlite3.connect(self.dir / "state.db", isolation_level=None, check_same_thread=False)
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as e:
            raise DataError(f"{self.dir / 'state.db'}: not a hamrah server state database ({e})") from None
        self._bind_config(config)

    def _remove_half_written(self) -> None:
        """Delete the temporary files a crash (SIGKILL mid-write) left behind: a ``.tmp`` is never a
        committed file (``write_atomic`` renames it into place only once it is complete)."""
        stale = [p for d in (self.dir, self.dir / "checkpoints") for p in d.glob("*.tmp") if p.is_file()]
        for p in stale:
            p.unlink(missing_ok=True)
        if stale:
            log.warning(
                "removed %d half-written file(s) a crash left in %s: %s",
                len(stale),
                self.dir,
                ", ".join(p.name for p in stale[:5]),
            )

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
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def committed_rounds(self) -> list[dict]:
        """Return the records of every committed round, in order."""
        rows = self._db.execute("SELECT record FROM rounds ORDER BY round").fetchall()
        return [json.loads(r[0]) for r in rows]

    def latest(self) -> tuple[int, Params, Params, dict] | None:
        """Return (round, global params, server state tensors, server state scalars) of the newest
        committed round whose checkpoint is intact, or None when no round is committed.

        A newer round whose checkpoint is missing or corrupt is skipped with a warning and its row
        dropped (the round is repeated).

        Raises:
            DataError: rounds are committed but none has an intact checkpoint.
        """
        rows = self._db.execute(
            "SELECT round, checkpoint, sha256, server_state FROM rounds ORDER BY round DESC"
        ).fetchall()
        problems = []
        for row in rows:
            try:
                tensors = self._load(row)
            except DataError as e:
                problems.append(str(e))
                continue
            if problems:
                log.warning(
                    "falling back to committed round %d: %s; the rounds after it are repeated",
                    row[0],
                    "; ".join(problems),
                )
                with self._db:
                    self._db.execute("DELETE FROM rounds WHERE round > ?", (row[0],))
                self._write_reports()
            params = {k: v for k, v in tensors.items() if not k.startswith(_STATE_PREFIX)}
            state = {k[len(_STATE_PREFIX) :]: v for k, v in tensors.items() if k.startswith(_STATE_PREFIX)}
            return int(row[0]), params, state, json.loads(row[3])
        if problems:
            raise DataError(f"{self.dir}: no committed round has an intact checkpoint ({'; '.join(problems[:3])})")
        return None

    def _load(self, row) -> Params:
        path = self.dir / "checkpoints" / row[1]
        try:
            data = path.read_bytes()
        except OSError as e:
            raise DataError(f"{path}: checkpoint of committed round {row[0]} unreadable ({e.strerror})") from None
        if sha256(data) != row[2]:
            raise DataError(f"{path}: checkpoint of committed round {row[0]} does not match its sha256")
        return decode_params(data, what=str(path))

    def totals(self) -> dict:
        """Return the run totals saved with the last commit ({} before the first)."""
        row = self._db.execute("SELECT value FROM meta WHERE key = 'totals'").fetchone()
        return json.loads(row[0]) if row is not None else {}

    def commit(
        self,
        round_idx: int,
        params: Params,
        server_state: Params,
        scalars: dict,
        record: RoundRecord | dict,
        totals: dict | None = None,
    ) -> None:
        """Make round ``round_idx`` durable: checkpoint first, then its row (the commit point), with the
        run ``totals`` in the same transaction; then apply checkpoint retention.

        ``record`` is stored flattened (:meth:`hamrah.core.records.RoundRecord.to_dict`), as
        ``metrics.jsonl`` shows it; :meth:`committed_rounds` returns those dicts."""
        name = f"round_{round_idx:06d}.safetensors"
        tensors = dict(params)
        tensors.update({_STATE_PREFIX + k: v for k, v in server_state.items()})
        data = encode_params(tensors)
        write_atomic(self.dir / "checkpoints" / name, data)
        with self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO rounds VALUES (?, ?, ?, ?, ?, ?)",
                (round_idx, name, sha256(data), record_line(record), json.dumps(scalars), time.time()),
            )
            if totals is not None:
                self._db.execute("INSERT OR REPLACE INTO meta VALUES ('totals', ?)", (finite_json(totals),))
            self._write_privacy_rows()  # the budget this round charges, in the round's own transaction
        self._write_reports()
        self._retain()

    def _retain(self) -> None:
        folder = self.dir / "checkpoints"
        rows = self._db.execute("SELECT round, checkpoint, record FROM rounds").fetchall()
        present = [(r, name, json.loads(rec).get("test_accuracy")) for r, name, rec in rows if (folder / name).exists()]
        names = {r: name for r, name, _ in present}
        for r in checkpoints_to_delete([(r, acc) for r, _, acc in present], self.keep_last, self.keep_best):
            (folder / names[r]).unlink(missing_ok=True)

    def _write_reports(self) -> None:
        records = self.committed_rounds()
        lines = "".join(record_line(r) + "\n" for r in records)
        write_atomic(self.dir / "metrics.jsonl", lines.encode("utf-8"))

    def write_summary(self, summary: dict) -> None:
        text = json.dumps(json.loads(finite_json(summary)), indent=2)
        write_atomic(self.dir / "summary.json", (text + "\n").encode("utf-8"))

    # --- the privacy ledger (docs/dp.md): kept in state.db, written with the round it charges ---------

    def _privacy_table(self) -> None:
        self._db.execute("CREATE TABLE IF NOT EXISTS privacy (key TEXT PRIMARY KEY, value TEXT NOT NULL)")

    def stage_privacy(self, key: str, value: dict) -> None:
        """Queue ``value`` (the budget ledger, DP-FTRL's participants, stage states) under ``key``: the next
        :meth:`commit` writes it in the same transaction as its round row, so neither exists without the other."""
        if not hasattr(self, "_privacy_pending"):
            self._privacy_pending: dict[str, str] = {}
        self._privacy_pending[key] = json.dumps(value, sort_keys=True)

    def _write_privacy_rows(self) -> None:
        pending = getattr(self, "_privacy_pending", {})
        if pending:
            self._privacy_table()
            self._db.executemany("INSERT OR REPLACE INTO privacy VALUES (?, ?)", list(pending.items()))
        self._privacy_pending = {}

    def privacy_row(self, key: str) -> dict | None:
        """Return the committed value under ``key``, or None.

        Raises:
            DataError: the stored value is not a JSON object.
        """
        self._privacy_table()
        row = self._db.execute("SELECT value FROM privacy WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        try:
            value = json.loads(row[0])
        except ValueError as e:
            raise DataError(f"{self.dir / 'state.db'}: privacy entry {key!r} is not JSON ({e})") from None
        if not isinstance(value, dict):
            raise DataError(f"{self.dir / 'state.db'}: privacy entry {key!r}: expected a JSON object")
        return value

    def has_checkpoints(self) -> bool:
        """Return True when this folder holds a committed round or any checkpoint file."""
        row = self._db.execute("SELECT COUNT(*) FROM rounds").fetchone()
        return bool(row[0]) or any((self.dir / "checkpoints").glob("round_*.safetensors"))

    def last_committed_round(self) -> int:
        """Return the newest committed round number (0: none)."""
        row = self._db.execute("SELECT MAX(round) FROM rounds").fetchone()
        return int(row[0] or 0)
