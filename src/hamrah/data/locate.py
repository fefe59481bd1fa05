"""Find a data file: explicit path, $HAMRAH_DATA, the copy bundled in the repo, the user cache."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

REPO_DATA = Path(__file__).resolve().parents[3] / "data"


def cache_dir() -> Path:
    """Return the user cache folder for downloaded data (``$XDG_CACHE_HOME/hamrah``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "hamrah"


def candidate_dirs(subdir: str, explicit: str | os.PathLike | None = None) -> list[Path]:
    """Return the folders searched for ``subdir``, in order of preference.

    An explicit location is the only one searched: a bad explicit copy is an error, never silently
    replaced by another copy.
    """
    if explicit is not None:
        return [Path(explicit)]
    dirs: list[Path] = []
    if os.environ.get("HAMRAH_DATA"):
        dirs.append(Path(os.environ["HAMRAH_DATA"]) / subdir)
    dirs += [REPO_DATA / subdir, cache_dir() / subdir]
    return dirs


def sha256_file(path: Path) -> str:
    """Return the hex sha256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
