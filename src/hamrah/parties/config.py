"""One party's TOML config for ``hamrah party``: who it is, its data, its peers, TLS and the protocol.

Example (``configs/vertical_sshe_guest.toml``)::

    [party]
    name = "guest"              # this party; also the common name of its TLS certificates
    role = "guest"              # the protocol role it plays: guest | host | arbiter
    listen = "127.0.0.1:50071"
    out = "runs/vertical/guest" # model, checkpoints (one per completed epoch) and summary
    timeout_s = 300             # silence before a peer counts as gone
    retries = 3                 # times to resume after a peer went away
    workers = 1                 # processes for this party's PSI blinding (any protocol's PSI step)

    [data]                      # absent for an arbiter
    path = "../data/vertical/breast_hetero_guest.csv.gz"
    label_column = "y"          # the label holder only; id_column = "id" by default
    id_type = "int"             # or "str": text ids (e.g. account numbers), the same at every party

    [peers]                     # every other party: name = "host:port"
    host = "127.0.0.1:50072"

    [tls]                       # the parties' CA, this party's server and client certificates
    ca = "tls/ca.pem"
    cert = "tls/guest-server.pem"
    key = "tls/guest-server.key"
    client_cert = "tls/guest-client.pem"
    client_key = "tls/guest-client.key"

    [protocol]                  # the protocol's name and its settings (hamrah.vertical.registry)
    name = "sshe_lr"
    epochs = 10

Relative paths are relative to the TOML file's folder.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from pathlib import Path

from hamrah.core.config_read import read_toml
from hamrah.core.errors import ConfigError
from hamrah.data.vertical import ID_TYPES
from hamrah.parties.channel import TLSFiles
from hamrah.transport.endpoints import is_address
from hamrah.vertical.registry import PROTOCOLS, build_config

SECTIONS = {
    "party": {"name", "role", "listen", "out", "timeout_s", "retries", "workers"},
    "data": {"path", "id_column", "label_column", "id_type"},
    "peers": None,
    "tls": {"ca", "cert", "key", "client_cert", "client_key"},
    "protocol": None,
}


@dataclass(frozen=True)
class PartyConfig:
    """A parsed party config (see the module docstring for the keys)."""

    name: str
    role: str
    listen: str
    out: Path
    peers: dict
    tls: TLSFiles
    protocol: str
    settings: object
    data_path: Path | None = None
    id_column: str = "id"
    label_column: str | None = None
    id_type: str = "int"
    timeout_s: float = 300.0
    retries: int = 3
    workers: int = 1


def _check_keys(doc: dict, path: Path) -> None:
    for section, value in doc.items():
        if section not in SECTIONS:
            close = difflib.get_close_matches(section, SECTIONS, n=1)
            raise ConfigError(
                f"{path}: unknown section [{section}] (expected {', '.join(SECTIONS)})"
                + (f"; did you mean [{close[0]}]?" if close else "")
            )
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: [{section}] must be a table")
        allowed = SECTIONS[section]
        for key in value:
            if allowed is not None and key not in allowed:
                close = difflib.get_close_matches(key, allowed, n=1)
                raise ConfigError(
                    f"{path}: unknown key {section}.{key} (expected {', '.join(sorted(allowed))})"
                    + (f"; did you mean {close[0]!r}?" if close else "")
                )


def _str(section: dict, key: str, where: str, default: str | None = None) -> str:
    value = section.get(key, default)
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}.{key}: expected a non-empty string, got {value!r}")
    return value


def load_party_config(path: str | Path) -> PartyConfig:
    """Read and validate one party's TOML.

    Raises:
        ConfigError: a missing file, bad TOML, an unknown section or key, a wrong type or value.
    """
    path = Path(path)
    doc = read_toml(path)  # a file that cannot be read or parsed, or holds what no config can: named
    try:
        return _parse(doc, path)
    except ConfigError as e:  # every message names the file
        text = str(e)
        raise ConfigError(text if text.startswith(f"{path}:") else f"{path}: {text}") from None


def _parse(doc: dict, path: Path) -> PartyConfig:
    _check_keys(doc, path)
    base = path.parent
    party, data, peers, tls = (doc.get(s, {}) for s in ("party", "data", "peers", "tls"))
    protocol = dict(doc.get("protocol", {}))
    name = protocol.pop("name", None)
    if name not in PROTOCOLS:
        raise ConfigError(f"{path}: protocol.name = {name!r}: expected one of {', '.join(sorted(PROTOCOLS))}")
    role = _str(party, "role", "party")
    roles = tuple(PROTOCOLS[name].roles)
    if role not in roles:
        raise ConfigError(f"{path}: party.role = {role!r}: protocol {name!r} has roles {', '.join(roles)}")
    if not peers or not all(is_address(v) for v in peers.values()):
        raise ConfigError(f'{path}: [peers] must name every other party as name = "host:port" (port 1..65535)')
    if not is_address(party.get("listen")):
        raise ConfigError(f'{path}: party.listen = {party.get("listen")!r}: expected "host:port" (port 1..65535)')
    if role == "guest" and name != "psi" and "label_column" not in data:
        raise ConfigError(f'{path}: data.label_column is required for the guest of {name} (the label holder), e.g. "y"')
    if data.get("id_type", "int") not in ID_TYPES:
        raise ConfigError(f"{path}: data.id_type = {data['id_type']!r}: expected one of {', '.join(ID_TYPES)}")
    if role != "arbiter" and "path" not in data:
        raise ConfigError(f"{path}: data.path is required for a {role}")
    for key in ("timeout_s", "retries"):
        v = party.get(key, 1)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
            raise ConfigError(f"{path}: party.{key} = {v!r}: expected a number >= 0")
    workers = party.get("workers", 1)
    if isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= 1024:
        raise ConfigError(f"{path}: party.workers = {workers!r}: expected an integer in 1..1024")
    files = TLSFiles(*(str(base / _str(tls, k, "tls")) for k in ("ca", "cert", "key", "client_cert", "client_key")))
    return PartyConfig(
        name=_str(party, "name", "party"),
        role=role,
        listen=_str(party, "listen", "party"),
        out=Path(os.path.normpath(base / _str(party, "out", "party", f"runs/party-{party.get('name', 'x')}"))),
        peers=dict(peers),
        tls=files,
        protocol=name,
        settings=build_config(name, protocol),
        data_path=base / data["path"] if "path" in data else None,
        id_column=data.get("id_column", "id"),
        label_column=data.get("label_column"),
        id_type=data.get("id_type", "int"),
        timeout_s=float(party.get("timeout_s", 300.0)),
        retries=int(party.get("retries", 3)),
        workers=workers,
    )


__all__ = ["PartyConfig", "load_party_config"]
