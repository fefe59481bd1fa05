"""Find a data file: explicit path, $HAMRAH_DATA, the copy bundled in the repo, the user cache.

Also the decoded-array cache (:func:`cached_arrays`): a data set is decoded once, its arrays kept as
one ``.npz`` in the user cache, keyed by the digests of the verified source files and checked against
its own sha256 on every load; a corrupt, truncated or stale entry is decoded again and replaced.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from hamrah.core.files import write_atomic

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


CACHE_FORMAT = 2  # bump when the cached arrays change or a decoder refuses more: old entries are then ignored


def cache_key(sources: Mapping[str, str]) -> str:
    """Return the cache key of a data set made from ``sources`` (file name -> verified sha256)."""
    text = json.dumps({"format": CACHE_FORMAT, "sources": dict(sorted(sources.items()))}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def cached_arrays(
    name: str,
    sources: Mapping[str, str],
    decode: Callable[[], dict[str, np.ndarray]],
    folder: str | os.PathLike | None = None,
) -> dict[str, np.ndarray]:
    """Return ``decode()``'s arrays, read from the decoded-array cache when it holds a verified copy.

    The entry lives in ``cache_dir()/decoded/<name>-<key>.npz`` (or ``folder``) with a manifest ``.json`` beside it
    holding the key and the ``.npz``'s sha256. An entry whose manifest is missing, unreadable, for other
    sources, or whose file does not match its digest is decoded again and replaced (atomically: a
    reader sees the old entry or the new one, never half of one). A cache folder that cannot be written
    only costs the speed-up.

    Args:
        name: the data set's name (part of the file name).
        sources: file name -> sha256 of the source files the arrays are decoded from, already verified.
        decode: returns the arrays (name -> array; numeric or unicode dtypes, no objects) from the sources.
        folder: the cache folder instead of ``cache_dir()/decoded``.

    Returns:
        The arrays, equal to ``decode()``'s.
    """
    key = cache_key(sources)
    folder = Path(folder).expanduser() if folder is not None else cache_dir() / "decoded"
    stem = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name) + f"-{key[:24]}"
    npz, manifest = folder / f"{stem}.npz", folder / f"{stem}.json"
    arrays = _read_entry(npz, manifest, key)
    if arrays is not None:
        return arrays
    arrays = decode()
    try:
        _write_entry(npz, manifest, key, arrays)
    except OSError:
        pass  # a read-only or full cache: the arrays are still right, only not kept
    return arrays


def _read_entry(npz: Path, manifest: Path, key: str) -> dict[str, np.ndarray] | None:
    """Return the entry's arrays when its manifest matches ``key`` and its digest; else None."""
    try:
        meta = json.loads(manifest.read_text(encoding="utf-8"))
        if not isinstance(meta, dict) or meta.get("key") != key or sha256_file(npz) != meta.get("sha256"):
            return None
        with np.load(npz, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
        listed = sorted(meta.get("arrays", ()))  # inside the try: a manifest's "arrays" may be anything
    except (OSError, ValueError, TypeError, KeyError, EOFError, RecursionError, zipfile.BadZipFile):
        return None
    return arrays if sorted(arrays) == listed else None


def _write_entry(npz: Path, manifest: Path, key: str, arrays: dict[str, np.ndarray]) -> None:
    """Write the entry: the ``.npz`` first, then the manifest naming its digest (each atomically)."""
    npz.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(npz, lambda f: np.savez(f, **arrays))
    meta = {"key": key, "sha256": sha256_file(npz), "arrays": sorted(arrays)}
    write_atomic(manifest, json.dumps(meta))
