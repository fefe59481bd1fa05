"""Vertical protocols by name: their roles and their typed settings, for ``hamrah party``.

Each entry names the module, the frozen config dataclass and, per role, the role function. A role
function has the signature ``role(channel, table, config)``: ``table`` is the party's
:class:`~hamrah.data.vertical.PartyTable` (``None`` for an arbiter), ``config`` the dataclass built
by :func:`build_config` from the ``[protocol]`` settings of the party's TOML. Modules are imported
only when a protocol is used, so an entry is one line and adding one touches nothing else.

Example::

    spec = resolve("coordinated_lr")
    config = build_config("coordinated_lr", {"epochs": 5})
    result = spec.roles["guest"](channel, table, config)
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from hamrah.core.errors import ConfigError


@dataclass(frozen=True)
class ProtocolEntry:
    """Where a protocol lives: ``module``, its config class, role -> function name, and the class of
    the state its roles checkpoint after each epoch (``""``: none; it has ``from_arrays``)."""

    module: str
    config: str
    roles: Mapping[str, str]
    summary: str
    checkpoint: str = ""


@dataclass(frozen=True)
class Protocol:
    """A resolved protocol: its config class and its role functions."""

    name: str
    config: type
    roles: Mapping[str, Callable]
    checkpoint: type | None = None


PROTOCOLS: dict[str, ProtocolEntry] = {
    "psi": ProtocolEntry(
        "hamrah.vertical.psi",
        "PSIConfig",
        {"guest": "psi_role", "host": "psi_role"},
        "ECDH private set intersection (X25519); every party learns the shared ids",
    ),
    "coordinated_lr": ProtocolEntry(
        "hamrah.vertical.lr_coordinated",
        "LRConfig",
        {"guest": "guest", "host": "host", "arbiter": "arbiter"},
        "vertical logistic regression, Paillier key held by an arbiter (FATE CoordinatedLR)",
        "LRState",
    ),
    "sshe_lr": ProtocolEntry(
        "hamrah.vertical.lr_sshe",
        "LRConfig",
        {"guest": "guest", "host": "host"},
        "vertical logistic regression without a third party: HE plus secret sharing (SSHE-LR)",
        "LRState",
    ),
    "splitnn": ProtocolEntry(
        "hamrah.vertical.splitnn",
        "SplitNNConfig",
        {"guest": "guest", "host": "host"},
        "split learning: bottom networks at every party, the top network at the label holder",
        "NetCheckpoint",
    ),
    "secureboost": ProtocolEntry(
        "hamrah.vertical.secureboost",
        "SecureBoostConfig",
        {"guest": "guest", "host": "host"},
        "SecureBoost: vertical gradient-boosted trees, gradients Paillier-encrypted by the label holder",
        "BoostCheckpoint",
    ),
    "ftl": ProtocolEntry(
        "hamrah.vertical.ftl",
        "FTLConfig",
        {"guest": "party_guest", "host": "party_host"},
        "federated transfer learning (Liu et al. 2020), plain or Paillier with masks; PSI first",
        "NetCheckpoint",
    ),
}


def _suggest(name: str, options) -> str:
    close = difflib.get_close_matches(name, list(options), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def resolve(name: str) -> Protocol:
    """Return the protocol called ``name``.

    Raises:
        ConfigError: no such protocol; names the ones there are.
    """
    if not isinstance(name, str) or name not in PROTOCOLS:
        hint = _suggest(name, PROTOCOLS) if isinstance(name, str) else ""
        raise ConfigError(f"protocol {name!r}: expected one of {', '.join(sorted(PROTOCOLS))}{hint}")
    entry = PROTOCOLS[name]
    module = importlib.import_module(entry.module)
    return Protocol(
        name,
        getattr(module, entry.config),
        {r: getattr(module, f) for r, f in entry.roles.items()},
        getattr(module, entry.checkpoint) if entry.checkpoint else None,
    )


def _coerce(where: str, value, default):
    kind = type(default)
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, tuple):
        ok = isinstance(value, (list, tuple))
        value = tuple(value) if ok else value
    else:
        ok = default is None or isinstance(value, kind)
    if not ok:
        raise ConfigError(f"{where} = {value!r}: expected {kind.__name__}")
    return value


def build_config(name: str, settings: Mapping[str, object]):
    """Return the protocol's config dataclass from plain settings (a TOML table).

    Raises:
        ConfigError: an unknown protocol or key (with a "did you mean"), a wrong type, or a value the
            dataclass refuses.
    """
    cls = resolve(name).config
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values = {}
    for key, value in settings.items():
        if key not in fields:
            raise ConfigError(
                f"protocol.{key}: not a setting of {name!r} (it takes {', '.join(fields)}){_suggest(key, fields)}"
            )
        f = fields[key]
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        values[key] = _coerce(f"protocol.{key}", value, default)
    return cls(**values)


__all__ = ["PROTOCOLS", "Protocol", "ProtocolEntry", "build_config", "resolve"]
