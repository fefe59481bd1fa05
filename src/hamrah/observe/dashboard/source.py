"""What the dashboard serves: the runs under a folder and a live server's telemetry, as JSON the page
can always show (see :func:`encode`)."""

from __future__ import annotations

import json
import math
from urllib.parse import unquote

from hamrah.observe.runs import SHOWN_RECORDS, RunFolder, printable
from hamrah.observe.telemetry import Telemetry

MAX_DEPTH = 40  # JSON nesting sent to the page


class Source:
    """What the dashboard shows: the runs under a folder, plus a live server's telemetry.

    Args:
        folder: the runs (``hamrah dashboard RUNS_DIR``), or a live server's state folder.
        telemetry: the live server's registry (None: runs read from disk only).
        live_status: returns the live run's ``(status, error)``; its run is the folder itself (".").
        live_config: the live run's resolved config (its summary, which also carries it, is written
            only at the end).
    """

    def __init__(
        self, folder: RunFolder, telemetry: Telemetry | None = None, live_status=None, live_config: dict | None = None
    ):
        self.folder, self.telemetry, self.live_status, self.live_config = folder, telemetry, live_status, live_config

    def run(self, name: str, full: bool = True, shown: int = SHOWN_RECORDS) -> dict:
        run = self.folder.run(name, full, shown)
        if self.live_status is not None and name == ".":
            run["status"], run["error"] = self.live_status()
            if full and not run.get("config"):
                run["config"] = self.live_config
            if full and self.telemetry is not None:
                run["log"] = self.telemetry.snapshot(max_devices=0)["logs"][-40:] or run["log"]
        return run

    def runs(self) -> list[dict]:
        return [self.run(n, full=False) for n in self.folder.names()]

    def live(self) -> dict | None:
        return self.telemetry.snapshot() if self.telemetry is not None else None

    def stamp(self) -> tuple:
        return (
            self.folder.stamp(),
            self.telemetry.version if self.telemetry is not None else 0,
            self.live_status() if self.live_status is not None else None,
        )

    def records(self) -> list[dict]:
        names = self.folder.names()
        name = "." if "." in names else (names[0] if len(names) == 1 else None)
        return self.folder.records(self.folder.root / name) if name is not None else []


def encode(obj) -> bytes:
    """Encode for the page: no NaN or infinity (null), text as valid UTF-8, nesting cut at
    :data:`MAX_DEPTH` (a hostile config of a thousand nested lists is sent as a note, not a crash)."""

    def clean(x, depth):
        if isinstance(x, float) and not math.isfinite(x):
            return None
        if isinstance(x, str):
            return printable(x)
        if isinstance(x, (dict, list, tuple)) and depth >= MAX_DEPTH:
            return f"(nested deeper than {MAX_DEPTH} levels: not shown)"
        if isinstance(x, dict):
            return {printable(str(k)): clean(v, depth + 1) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [clean(v, depth + 1) for v in x]
        return x

    return json.dumps(clean(obj, 0), separators=(",", ":")).encode("utf-8")


def split_names(value: str) -> list[str]:
    """Return the run names of ``?names=`` / ``?compare=``: comma-separated, each percent-encoded
    (the page encodes each name, so a name may hold a comma)."""
    return [unquote(n) for n in value.split(",") if n]


__all__ = ["Source", "encode", "split_names"]
