"""Output paths: refuse one that cannot be made or written before any work starts (nothing is made)."""

from __future__ import annotations

import os
from pathlib import Path

from hamrah.core.errors import ConfigError


def check_writable_folder(path: str | Path, setting: str) -> None:
    """Refuse ``path`` as an output folder when it is a file, lies under a file, or its nearest existing
    folder cannot be written.

    Args:
        path: the folder (it need not exist yet). setting: the option or key that named it, for the message.

    Raises:
        ConfigError: names ``setting``, the path and what is in the way.
    """
    _check(Path(path), Path(path), setting)


def check_writable_file(path: str | Path, setting: str) -> None:
    """Refuse ``path`` as an output file when it is a folder or its folder cannot be made or written.

    Raises:
        ConfigError: names ``setting``, the path and what is in the way.
    """
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{setting} {path}: is a folder; expected a file name")
    _check(path, path.parent, setting)


def _check(path: Path, start: Path, setting: str) -> None:
    """Walk up from ``start`` to the nearest existing path: it must be a writable folder."""
    probe = start
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        where = "is a file" if probe == path else f"lies under the file {probe}"
        raise ConfigError(f"{setting} {path}: {where}; expected a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(f"{setting} {path}: {probe} is not writable; expected a folder this user can write")


__all__ = ["check_writable_file", "check_writable_folder"]
