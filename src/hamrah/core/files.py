"""Output files: refuse a path that cannot be made or written before any work starts (nothing is made);
write a file all or nothing (:func:`write_atomic`)."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

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


def write_atomic(path: str | Path, data: bytes | str | Callable[[BinaryIO], object], *, private: bool = False) -> Path:
    """Replace ``path`` with ``data``, all or nothing and durably; return ``path``.

    ``data`` is bytes, text (written as UTF-8) or a function that writes to the open binary file (such
    as ``np.savez``). It goes to a new temporary file beside ``path`` (``.<name>.<random>.tmp``; mode
    0600 when ``private``, else as the umask allows), is flushed to disk, renamed over ``path``, and the
    folder is synced: a kill or a power cut leaves the old file or the new one, never part of one. On
    any error the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if private else 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    try:  # the rename itself survives a power cut once the folder is on disk
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
    except OSError:  # a file system whose folders cannot be opened or synced: the rename stands as it is
        pass
    return path


__all__ = ["check_writable_file", "check_writable_folder", "write_atomic"]
