"""The Example Store's checks: a time-to-live, and SQLite's errors on a damaged file, a full disk or a
read-only folder turned into a DataError naming the store (a raw ``sqlite3.DatabaseError`` from a page
damaged past the store's first stopped a device mid-run with a traceback)."""

from __future__ import annotations

import functools
import inspect
import math
import sqlite3
from collections.abc import Callable
from typing import Any, TypeVar

from hamrah.core.errors import DataError

F = TypeVar("F", bound=Callable[..., Any])


def check_ttl(ttl_s: Any, name: str = "ttl_s =") -> None:
    """Raise DataError, naming ``name`` (``"--ttl"``: the CLI's option) and the value, unless ``ttl_s`` is
    None or a positive, finite number of seconds."""
    number = isinstance(ttl_s, (int, float)) and not isinstance(ttl_s, bool)
    if ttl_s is not None and not (number and math.isfinite(ttl_s) and ttl_s > 0):
        shown = f"{ttl_s:g}" if number else repr(ttl_s)
        raise DataError(f"{name} {shown}: expected a positive number of seconds, or none for no expiry")


def _damaged(path, e: sqlite3.DatabaseError) -> DataError:
    return DataError(
        f"{path}: the example store cannot be read or written ({e}); expected an intact SQLite file on a "
        "writable disk with room (rebuild a damaged one with `hamrah store import --store NEW_PATH`)"
    )


def sqlite_checked(method: F) -> F:
    """Wrap a store method (a generator's too) so that SQLite's DatabaseError becomes a DataError naming the
    store's ``path``."""
    if inspect.isgeneratorfunction(method):

        @functools.wraps(method)
        def generator(self, *args, **kwargs):
            try:
                yield from method(self, *args, **kwargs)
            except sqlite3.DatabaseError as e:
                raise _damaged(self.path, e) from None

        return generator  # type: ignore[return-value]

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except sqlite3.DatabaseError as e:
            raise _damaged(self.path, e) from None

    return wrapper  # type: ignore[return-value]


__all__ = ["check_ttl", "sqlite_checked"]
