"""Config sections that name a variant (a codec, an HE scheme) plus the settings that variant takes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hamrah.core.errors import ConfigError


def variant_settings(
    section: Mapping[str, Any], key: str, default: str, takes: Mapping[str, tuple[str, ...]], where: str, kind: str
) -> tuple[str, dict[str, Any]]:
    """Return ``(variant, its settings)`` from a section, dropping None values.

    Args:
        section: the section as plain data. key: the entry naming the variant (e.g. ``"codec"``).
        default: the variant when ``key`` is absent. takes: variant -> the settings it accepts.
        where: the section's name in messages (``"compression"``). kind: what a variant is (``"codec"``).

    Raises:
        ConfigError: an unknown variant, or a setting the variant does not take, named.
    """
    s = {k: v for k, v in section.items() if v is not None}
    name = s.pop(key, default)
    if name not in takes:
        raise ConfigError(f"{where}.{key} = {name!r}: expected one of {', '.join(takes)}")
    unused = sorted(set(s) - set(takes[name]))
    if unused:
        raise ConfigError(
            f"{where}.{unused[0]} = {s[unused[0]]!r}: {kind} {name!r} does not use it "
            f"(it takes {', '.join(takes[name]) or 'no settings'})"
        )
    return name, s


__all__ = ["variant_settings"]
