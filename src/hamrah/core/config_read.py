"""Reading a config file: TOML text into plain tables, refusing in one line what no config can hold (a file
that cannot be read or parsed, integers beyond 64 bits, NUL characters, tables nested thousands deep), and
showing a key or a value in a message so that the message stays one short line whatever the file holds.
"""

from __future__ import annotations

import json
import math
import reprlib
import sys
from pathlib import Path
from typing import Any

from hamrah.core.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib  # type: ignore[import-not-found]

MAX_DEPTH = 16  # the deepest tables or arrays a config may nest (task.kwargs, attack parameters)
_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother, _REPR.maxlong, _REPR.maxdict, _REPR.maxlist = 3, 80, 80, 40, 6, 6


def read_toml(path: str | Path) -> dict[str, Any]:
    """Return a TOML file's tables.

    Raises:
        ConfigError: the file is missing, unreadable or not valid TOML, naming the file.
    """
    path = Path(path)
    try:
        raw: dict[str, Any] = tomllib.loads(
            path.read_text(encoding="utf-8-sig")
        )  # -sig: a byte-order mark (Notepad) is skipped
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read config ({e})") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML ({e})") from None
    except ValueError:  # tomllib lets int() refuse a literal of over 4300 digits
        raise ConfigError(f"{path}: an integer of thousands of digits; expected integers within 64 bits") from None
    except RecursionError:  # arrays or inline tables nested hundreds deep
        raise ConfigError(f"{path}: arrays or inline tables nested hundreds deep; expected plain values") from None
    try:
        check_plain(raw)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    return raw


def check_plain(raw: dict[str, Any], depth: int = MAX_DEPTH) -> None:
    """Refuse what TOML does not promise and later checks cannot show: an integer beyond 64 bits (the TOML
    spec's range; Python's reader takes any), text holding a NUL character, and tables or arrays nested
    more than ``depth`` deep.

    Raises:
        ConfigError: naming the dotted key.
    """
    stack: list[tuple[tuple[str | int, ...], Any]] = [((k,), v) for k, v in raw.items()]
    while stack:  # iterative: a dotted header [a.b.c...] nests thousands deep without any recursion
        path, value = stack.pop()
        if len(path) > depth:
            raise ConfigError(f"{dotted(path)}: nested more than {depth} tables or arrays deep; expected plain values")
        why = value_problem(value)
        if why is not None:
            raise ConfigError(f"{dotted(path)} = {shown(value)}: {why}")
        if isinstance(value, dict):
            stack.extend(((*path, k), v) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend(((*path, i), v) for i, v in enumerate(value))


def value_problem(value: Any) -> str | None:
    """Return why no config can hold ``value`` (an integer beyond 64 bits, text holding a NUL character:
    no path, module or name holds one), or None."""
    if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**63:
        return "expected an integer within 64 bits (TOML's range)"
    if isinstance(value, str) and "\0" in value:
        return "expected text without NUL characters"
    return None


def dotted(path: tuple[str | int, ...]) -> str:
    """``("data", "a b", 0)`` -> ``data."a b"[0]``: a key as TOML writes it, quoted (escapes and all) where it
    is not bare, each cut short."""
    parts = []
    for k in path:
        if isinstance(k, int):
            parts.append(f"[{k}]")
            continue
        bare = k.replace("_", "").replace("-", "").isalnum() and k.isascii()
        text = k if bare else json.dumps(k)
        parts.append(("." if parts else "") + (text if len(text) <= 40 else text[:37] + "..."))
    return "".join(parts)


def shown(value: Any) -> str:
    """Return ``repr(value)`` cut short for a message: a huge integer by its size, long text with an ellipsis,
    nesting by ``...`` (a repr of thousands of nested tables would itself fail)."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**60:
        return f"{'-' if value < 0 else ''}<an integer of about {round(value.bit_length() * math.log10(2))} digits>"
    return _REPR.repr(value)
