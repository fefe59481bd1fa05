"""Read runs from their output folders: ``metrics.jsonl`` (one record per round), ``summary.json``,
``failed.json`` and ``*.log``. Used by ``hamrah dashboard RUNS_DIR`` and by the live server's
dashboard (which reads its own state folder the same way).

Only these files are read: never checkpoints, the server's database or example stores, so nothing
served from here can carry update contents or example data. A half-written last line is skipped; a
field missing from a record is shown as missing, not guessed. Only regular files are opened, never
through a symbolic link (a link in a run folder that points elsewhere is not followed), and each file
is read up to a size cap: a damaged, huge or deeply nested file shows as unreadable, never stops the
dashboard.
"""

from __future__ import annotations

import json
import os
import re
import stat
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from hamrah.core.errors import ConfigError
from hamrah.core.files import write_atomic
from hamrah.core.numbers import is_number

RUN_FILES = ("metrics.jsonl", "summary.json", "failed.json", "rows.jsonl", "lab.json")  # rows, lab: hamrah lab
MAX_DEPTH = 4  # folders below RUNS_DIR searched for runs
MAX_RUNS = 500
MAX_JSON_BYTES = 8 * 2**20  # a larger summary.json / failed.json / config.json / lab.json is unreadable
MAX_RECORD_BYTES = 32 * 2**20  # of a larger metrics.jsonl / rows.jsonl only the last 32 MiB are read
SHOWN_RECORDS = 1000  # a run's records sent to the page: the last ones in full, earlier ones thinned
RUNNING_S = 120.0  # a run without summary whose records changed this recently is shown as running
PHASES = ("selection", "download", "training", "upload", "aggregation", "commit", "reporting", "eval")
# round-record fields that carry epsilon, in order of preference
EPSILON_KEYS = ("epsilon", "privacy_epsilon", "epsilon_spent")


def read_file(path: Path, max_bytes: int | None = None) -> bytes | None:
    """Return a regular file's bytes (with ``max_bytes``: only its last ``max_bytes``), or None for a
    missing file, a symbolic link, a folder, a pipe or a device. Never blocks on a pipe."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return None
    with os.fdopen(fd, "rb") as fh:
        try:
            size = os.fstat(fd).st_size
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return None
            if max_bytes is not None and size > max_bytes:
                fh.seek(size - max_bytes)
            return fh.read(max_bytes if max_bytes is not None else -1)
        except OSError:
            return None


def _loads(text: str | bytes):
    """``json.loads``; None for text that is not JSON or nests too deeply for the parser."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


def read_records(path: Path, max_bytes: int | None = None) -> list[dict]:
    """Return the JSON objects of a ``metrics.jsonl``, skipping lines that are not objects (a line
    being written, a corrupt line). A missing file gives ``[]``; with ``max_bytes``, only the file's
    last ``max_bytes`` are read (the cut first line is skipped)."""
    data = read_file(path, max_bytes)
    if data is None:
        return []
    lines = data.decode("utf-8", errors="replace").splitlines()
    if max_bytes is not None and len(data) == max_bytes and lines:
        lines = lines[1:]  # may start mid-line
    out = []
    for line in lines:
        obj = _loads(line)
        if isinstance(obj, dict):
            out.append(obj)
    return out


def _read_json(path: Path) -> dict | None:
    data = read_file(path, MAX_JSON_BYTES + 1)
    if data is None or len(data) > MAX_JSON_BYTES:
        return None
    obj = _loads(data.decode("utf-8", errors="replace"))
    return obj if isinstance(obj, dict) else None


def thin(records: list, limit: int = SHOWN_RECORDS, last: int = 300) -> list:
    """Return at most ``limit`` of ``records``: the ``last`` ones all, earlier ones evenly spaced (the
    first kept), so a run of thousands of rounds still draws its whole curve."""
    if len(records) <= limit:
        return records
    head, tail = records[:-last], records[-last:]
    step = len(head) / (limit - last)
    return [head[int(i * step)] for i in range(limit - last)] + tail


def epsilon_of(record: dict) -> float | None:
    """Return the epsilon spent a round record carries (None: no DP accounting in this run)."""
    for key in EPSILON_KEYS:
        v = record.get(key)
        if is_number(v):
            return float(v)
    return None


def phases_of(record: dict) -> dict[str, float]:
    """Return a round's time split by phase, from ``<phase>_s`` fields or a ``phases`` table (the ones
    present; a record without them gives ``{}``)."""
    out = {}
    table = record.get("phases") if isinstance(record.get("phases"), dict) else {}
    for name in PHASES:
        v = table.get(name, table.get(f"{name}_s", record.get(f"{name}_s")))
        if is_number(v) and v >= 0:
            out[name] = float(v)
    return out


def tail_lines(path: Path, n: int = 30, max_bytes: int = 64 * 1024) -> list[str]:
    """Return the last ``n`` lines of a text file (reads at most its last ``max_bytes``; a link, a
    pipe or a folder gives ``[]``)."""
    data = read_file(path, max_bytes)
    if data is None:
        return []
    return [line[:500] for line in data.decode("utf-8", "replace").splitlines()[-n:]]


@dataclass(frozen=True)
class RunStatus:
    """A run's state as read from its folder."""

    status: str  # running | finished | failed | stopped
    error: str | None = None


def run_status(folder: Path, summary: dict | None, failed: dict | None, now: float | None = None) -> RunStatus:
    """Return a folder's status: ``failed.json`` means failed; a summary means finished (either file
    present but unreadable: failed, saying so); records that changed within :data:`RUNNING_S` mean
    running; anything else stopped (killed or crashed)."""
    if failed is not None:
        return RunStatus("failed", str(failed.get("error", "unknown error"))[:2000])
    if summary is not None:
        return RunStatus("finished")
    for name in ("failed.json", "summary.json"):  # written whole (renamed into place): unreadable = damaged
        if (folder / name).is_file():
            return RunStatus(
                "failed",
                f"{name} cannot be read (not a JSON object, or over {MAX_JSON_BYTES >> 20} MiB); "
                "the run's other files are shown",
            )
    stamps = []
    for name in ("metrics.jsonl", "rows.jsonl"):  # a simulator or server run's rounds; a lab's cells
        try:
            stamps.append((folder / name).stat().st_mtime)
        except OSError:
            pass
    if not stamps:
        return RunStatus("stopped")
    return RunStatus("running" if (now or time.time()) - max(stamps) <= RUNNING_S else "stopped")


def write_failure(folder: str | Path, error: BaseException | str, log_lines: list[str] | None = None) -> Path:
    """Write ``failed.json`` (the error and the last log lines) into a run's folder, all or nothing."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    text = f"{type(error).__name__}: {error}" if isinstance(error, BaseException) else str(error)
    payload = {"error": text, "log": list(log_lines or [])[-30:], "time": time.time()}
    return write_atomic(folder / "failed.json", json.dumps(payload, indent=2) + "\n")


class RunFolder:
    """The runs under one folder, re-read only when a file's size or time changes."""

    def __init__(self, root: str | Path, always: tuple[str, ...] = ()):
        self.root = Path(root).resolve()
        self.always = always  # names listed even before their first file (a live server's ".")
        if not self.root.is_dir():
            raise ConfigError(f"{root}: no such folder; expected a folder of runs (hamrah run/sweep/server outputs)")
        self._cache: dict[Path, tuple[tuple, list[dict]]] = {}
        self._lock = threading.Lock()
        self._where: dict[str, str] = {}  # name shown -> folder relative to the root

    def names(self) -> list[str]:
        """Return the runs' names (paths relative to the root, '.' for the root itself), sorted. A folder
        name that is not UTF-8 is shown with U+FFFD in place of its undecodable bytes."""
        found: dict[str, str] = {}
        for dirpath, dirnames, filenames in os.walk(self.root):
            depth = len(Path(dirpath).relative_to(self.root).parts)
            dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")) if depth < MAX_DEPTH else []
            if any(f in filenames for f in RUN_FILES):
                rel = Path(dirpath).relative_to(self.root).as_posix()
                found.setdefault(printable(rel), rel)
            if len(found) >= MAX_RUNS:
                break
        for name in self.always:
            found.setdefault(name, name)
        self._where = found
        return sorted(found)

    def folder(self, name: str) -> Path:
        """Return the folder of run ``name``.

        Raises:
            ConfigError: ``name`` is not one of :meth:`names` (no path outside the root is ever read).
        """
        if not isinstance(name, str) or name not in self.names():
            raise ConfigError(f"run {str(name)[:80]!r} not found; expected one of the runs under {self.root}")
        return self.root / self._where.get(name, name)

    def records(self, folder: Path, file: str = "metrics.jsonl") -> list[dict]:
        """Return a run's round records (or, with ``file = "rows.jsonl"``, a lab's finished cells): of a
        file over :data:`MAX_RECORD_BYTES`, those in its last ``MAX_RECORD_BYTES``."""
        return self._cached(folder / file, _capped_records)

    def _json(self, path: Path) -> dict | None:
        return self._cached(path, _read_json)

    def _cached(self, path: Path, read):
        """``read(path)``, read again only when the file's size, time or identity changed."""
        try:
            st = path.lstat()
            stamp = (st.st_mtime_ns, st.st_size, st.st_ino, st.st_mode)
        except OSError:
            return read(path)  # missing: [] or None, nothing to keep
        with self._lock:
            hit = self._cache.get(path)
            if hit is not None and hit[0] == stamp:
                return hit[1]
        value = read(path)
        with self._lock:
            self._cache[path] = (stamp, value)
        return value

    def stamp(self) -> tuple:
        """Return a value that changes when any run's files change (the live page polls it)."""
        out = []
        for name in self.names():
            for f in RUN_FILES:
                try:
                    st = (self.root / self._where.get(name, name) / f).lstat()
                    out.append((name, f, st.st_mtime_ns, st.st_size))
                except OSError:
                    pass
        return tuple(out)

    def run(self, name: str, full: bool = True, shown: int = SHOWN_RECORDS) -> dict:
        """Return one run as plain data: status, records and (``full``) config, summary (without its
        config), log tail, and at most ``shown`` of its records (see :func:`thin`; ``records_total``
        counts them all)."""
        folder = self.folder(name)
        summary, failed = self._json(folder / "summary.json"), self._json(folder / "failed.json")
        lab = self._json(folder / "lab.json") if summary is None else None  # hamrah lab's result, once done
        if lab is not None:
            summary = {k: v for k, v in lab.items() if k != "rows"}
        status = run_status(folder, summary, failed)
        recs, cells = self.records(folder), self.records(folder, "rows.jsonl")
        out = {
            "name": name,
            "status": status.status,
            "error": status.error,
            "rounds": max((r.get("round", 0) for r in recs if isinstance(r.get("round"), int)), default=0),
            "last": recs[-1] if recs else None,
            "kind": "lab" if cells and not recs else "rounds",
            "cells": len(cells),
        }
        if full:
            logs = (failed or {}).get("log")
            logs = list(logs) if isinstance(logs, list) else []
            for log in sorted(folder.glob("*.log"))[:3]:
                logs = logs + tail_lines(log)
            out.update(
                config=(summary or {}).get("config") or self._json(folder / "config.json"),
                summary={k: v for k, v in (summary or {}).items() if k != "config"},
                records=thin(recs, shown),
                records_total=len(recs),
                cell_rows=cells[-5000:],
                log=[str(x)[:500] for x in logs][-40:],
            )
        return out


def printable(text: str) -> str:
    """Return ``text`` with lone surrogates (undecodable bytes of a file name, escapes in a JSON
    file) as U+FFFD, so it can be sent as UTF-8 and shown."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return _SURROGATE.sub("\ufffd", text)


_SURROGATE = re.compile("[\ud800-\udfff]")


def _capped_records(path: Path) -> list[dict]:
    return read_records(path, MAX_RECORD_BYTES)


__all__ = [
    "PHASES",
    "RunFolder",
    "RunStatus",
    "epsilon_of",
    "phases_of",
    "printable",
    "read_file",
    "read_records",
    "run_status",
    "tail_lines",
    "thin",
    "write_failure",
]
