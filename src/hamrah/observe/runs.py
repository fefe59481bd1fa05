"""Read runs from their output folders: ``metrics.jsonl`` (one record per round), ``summary.json``,
``failed.json`` and ``*.log``. Used by ``hamrah dashboard RUNS_DIR`` and by the live server's
dashboard (which reads its own state folder the same way).

Only these files are read: never checkpoints, the server's database or example stores, so nothing
served from here can carry update contents or example data. A half-written last line is skipped; a
field missing from a record is shown as missing, not guessed.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from hamrah.core.errors import ConfigError
from hamrah.core.numbers import is_number

RUN_FILES = ("metrics.jsonl", "summary.json", "failed.json", "rows.jsonl", "lab.json")  # rows, lab: hamrah lab
MAX_DEPTH = 4  # folders below RUNS_DIR searched for runs
MAX_RUNS = 500
RUNNING_S = 120.0  # a run without summary whose records changed this recently is shown as running
PHASES = ("selection", "download", "training", "upload", "aggregation", "commit", "reporting", "eval")
# round-record fields that carry epsilon, in order of preference
EPSILON_KEYS = ("epsilon", "privacy_epsilon", "epsilon_spent")


def read_records(path: Path) -> list[dict]:
    """Return the JSON objects of a ``metrics.jsonl``, skipping lines that are not objects (a line
    being written, a corrupt line). A missing file gives ``[]``."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    out = []
    for line in text.splitlines():
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict):
            out.append(obj)
    return out


def _read_json(path: Path) -> dict | None:
    try:
        obj = json.loads(path.read_text(encoding="utf-8", errors="replace"))
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


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
    """Return the last ``n`` lines of a text file (reads at most its last ``max_bytes``)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(size - max_bytes, 0))
            data = fh.read()
    except OSError:
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
            return RunStatus("failed", f"{name} cannot be read (not a JSON object); the run's other files are shown")
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
    tmp = folder / "failed.json.tmp"
    tmp.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, folder / "failed.json")
    return folder / "failed.json"


class RunFolder:
    """The runs under one folder, re-read only when a file's size or time changes."""

    def __init__(self, root: str | Path, always: tuple[str, ...] = ()):
        self.root = Path(root).resolve()
        self.always = always  # names listed even before their first file (a live server's ".")
        if not self.root.is_dir():
            raise ConfigError(f"{root}: no such folder; expected a folder of runs (hamrah run/sweep/server outputs)")
        self._cache: dict[Path, tuple[tuple, list[dict]]] = {}
        self._lock = threading.Lock()

    def names(self) -> list[str]:
        """Return the runs' names (paths relative to the root, '.' for the root itself), sorted."""
        found = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            depth = len(Path(dirpath).relative_to(self.root).parts)
            dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")) if depth < MAX_DEPTH else []
            if any(f in filenames for f in RUN_FILES):
                found.append(Path(dirpath).relative_to(self.root).as_posix())
            if len(found) >= MAX_RUNS:
                break
        return sorted(set(found) | set(self.always))

    def folder(self, name: str) -> Path:
        """Return the folder of run ``name``.

        Raises:
            ConfigError: ``name`` is not one of :meth:`names` (no path outside the root is ever read).
        """
        if not isinstance(name, str) or name not in self.names():
            raise ConfigError(f"run {str(name)[:80]!r} not found; expected one of the runs under {self.root}")
        return self.root / name

    def records(self, folder: Path, file: str = "metrics.jsonl") -> list[dict]:
        """Return a run's round records (or, with ``file = "rows.jsonl"``, a lab's finished cells)."""
        path = folder / file
        try:
            st = path.stat()
            stamp = (st.st_mtime_ns, st.st_size)
        except OSError:
            return []
        with self._lock:
            hit = self._cache.get(path)
            if hit is not None and hit[0] == stamp:
                return hit[1]
        recs = read_records(path)
        with self._lock:
            self._cache[path] = (stamp, recs)
        return recs

    def stamp(self) -> tuple:
        """Return a value that changes when any run's files change (the live page polls it)."""
        out = []
        for name in self.names():
            for f in RUN_FILES:
                try:
                    st = (self.root / name / f).stat()
                    out.append((name, f, st.st_mtime_ns, st.st_size))
                except OSError:
                    pass
        return tuple(out)

    def run(self, name: str, full: bool = True) -> dict:
        """Return one run as plain data: status, config, summary (without its config), records, log tail."""
        folder = self.folder(name)
        summary, failed = _read_json(folder / "summary.json"), _read_json(folder / "failed.json")
        lab = _read_json(folder / "lab.json") if summary is None else None  # hamrah lab's result, once done
        if lab is not None:
            summary = {k: v for k, v in lab.items() if k != "rows"}
        status = run_status(folder, summary, failed)
        recs, cells = self.records(folder), self.records(folder, "rows.jsonl")
        config = (summary or {}).get("config") or _read_json(folder / "config.json")
        logs = (failed or {}).get("log") or []
        for log in sorted(folder.glob("*.log"))[:3]:
            logs = logs + tail_lines(log)
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
            out.update(
                config=config,
                summary={k: v for k, v in (summary or {}).items() if k != "config"},
                records=recs,
                cell_rows=cells,
                log=[str(x)[:500] for x in logs][-40:],
            )
        return out


__all__ = [
    "PHASES",
    "RunFolder",
    "RunStatus",
    "epsilon_of",
    "phases_of",
    "read_records",
    "run_status",
    "tail_lines",
    "write_failure",
]
