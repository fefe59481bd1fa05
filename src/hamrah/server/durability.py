"""Operating a ``--state`` folder safely: one writer at a time, and which checkpoints to keep.

- :class:`StateLock`: an exclusive ``flock`` on ``DIR/lock`` held for the server's life. A second
  server on the same folder (another process, or another server in the same process) is refused with
  one line naming the holder's pid. The kernel drops the lock when the holder dies, SIGKILL included,
  so a crashed server never blocks its own restart.
- :func:`checkpoints_to_delete`: retention. The newest ``keep_last`` committed rounds keep their
  checkpoints, and (``keep_best``) the round with the best test accuracy; the others' files are
  deleted after each commit. Round records are never deleted (``metrics.jsonl`` stays complete).
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from hamrah.core.errors import ConfigError

LOCK_FILE = "lock"


class StateLock:
    """An exclusive, non-blocking lock on a state folder (POSIX ``flock``)."""

    def __init__(self, directory: Path):
        self.path = Path(directory) / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> StateLock:
        """Take the lock and write this process's pid into it.

        Raises:
            ConfigError: another server holds the folder, naming its pid.
        """
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise ConfigError(
                f"--state {self.path.parent}: another server (pid {holder}) is using this state "
                "folder; expected one server per state folder (stop it, or use another --state)"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        """Drop the lock (also dropped by the kernel when the process exits)."""
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def checkpoints_to_delete(rounds: list[tuple[int, float | None]], keep_last: int, keep_best: bool) -> list[int]:
    """Return the rounds whose checkpoints retention deletes.

    Args:
        rounds: (round, test accuracy or None) of every committed round whose checkpoint still exists.
        keep_last: how many of the newest rounds keep their checkpoints (0: all of them, nothing deleted).
        keep_best: also keep the round with the highest test accuracy (the earliest on a tie).

    Returns:
        Rounds to delete, ascending. The newest round is always kept (it is what a restart resumes).
    """
    if keep_last <= 0 or not rounds:
        return []
    ordered = sorted(rounds)
    keep = {r for r, _ in ordered[-keep_last:]}
    scored = [(acc, -r) for r, acc in ordered if acc is not None]
    if keep_best and scored:
        keep.add(-max(scored)[1])
    return [r for r, _ in ordered if r not in keep]


__all__ = ["LOCK_FILE", "StateLock", "checkpoints_to_delete"]
