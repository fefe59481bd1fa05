"""The ``[dashboard]`` section of a server config, and who may open the dashboard."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import typing
from dataclasses import dataclass, fields
from pathlib import Path

from hamrah.core.errors import ConfigError


@dataclass(frozen=True)
class DashboardConfig:
    """Where and for whom the live dashboard (and ``/metrics``) is served.

    Attributes:
        enabled: serve it (the section alone does not switch it on).
        host: address to listen on; loopback by default.
        port: port (0: any free port, logged at start).
        token_file: sha256 hex digests of operator tokens, one per line, ``sha256:`` prefix allowed
            (``hamrah tokens FILE --count 1 --server-file DIGESTS`` writes both); set: every request
            needs one of the tokens.
        allow_remote: listen on a non-loopback ``host``; refused unless true, and then only with a
            ``token_file`` (a remote dashboard is never open).
        metrics: also serve Prometheus ``/metrics``.
        max_streams: live (server-sent events) connections at once; more are refused with 503.
    """

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = 8765
    token_file: str | None = None
    allow_remote: bool = False
    metrics: bool = True
    max_streams: int = 16


def is_loopback(host: str) -> bool:
    """Return True for a loopback address or ``localhost``."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def dashboard_config(table: dict, base: Path | None = None) -> DashboardConfig:
    """Validate a ``[dashboard]`` table (relative ``token_file`` taken from ``base``).

    Raises:
        ConfigError: an unknown key, a wrong type, or a remote host without ``allow_remote`` and a token.
    """
    if not isinstance(table, dict):
        raise ConfigError("[dashboard] must be a table of keys")
    hints = typing.get_type_hints(DashboardConfig)
    names = [f.name for f in fields(DashboardConfig)]
    for key, value in table.items():
        if key not in hints:
            raise ConfigError(f"unknown key in [dashboard] {key!r}; expected one of {', '.join(names)}")
        base_t = next((a for a in typing.get_args(hints[key]) if a is not type(None)), hints[key])
        if not isinstance(value, base_t) or (base_t is int and isinstance(value, bool)):
            raise ConfigError(f"dashboard.{key} = {value!r}: expected {base_t.__name__}")
    cfg = DashboardConfig(**table)
    if not 0 <= cfg.port <= 65535:
        raise ConfigError(f"dashboard.port = {cfg.port}: expected 0..65535 (0: any free port)")
    if cfg.max_streams < 1:
        raise ConfigError(f"dashboard.max_streams = {cfg.max_streams}: expected an integer >= 1")
    if cfg.token_file is not None and base is not None:
        cfg = DashboardConfig(**{**cfg.__dict__, "token_file": str((base / cfg.token_file).resolve())})
    check_exposure(cfg)
    return cfg


def check_exposure(cfg: DashboardConfig, cli: bool = False) -> None:
    """Refuse a dashboard on a non-loopback address unless ``allow_remote`` and a token file are set.

    Args:
        cli: name the settings as ``hamrah dashboard``'s options (``--host``, ...), not as config keys.

    Raises:
        ConfigError: naming the setting to change.
    """
    if is_loopback(cfg.host):
        return
    host, remote, tokens = ("--host", "--allow-remote", "--token-file") if cli else CONFIG_NAMES
    if not cfg.allow_remote:
        raise ConfigError(
            f"{host} {cfg.host!r} is not a loopback address; expected 127.0.0.1, or "
            f"{remote} with {tokens} to serve it to other machines"
        )
    if cfg.token_file is None:
        raise ConfigError(
            f"{host} {cfg.host!r} with {remote}: expected {tokens} too "
            "(a dashboard reachable from other machines is never open)"
        )


CONFIG_NAMES = ("dashboard.host =", "allow_remote = true", "a token_file")


class TokenCheck:
    """Operator tokens, held as sha256 digests; compares in constant time.

    Args:
        token_file: a file of sha256 hex digests, one per line (None: no token needed).

    Raises:
        ConfigError: the file is missing or holds a line that is not a 64-hex-digit digest.
    """

    def __init__(self, token_file: str | None):
        self.digests: list[bytes] = []
        if token_file is None:
            return
        try:
            lines = Path(token_file).read_text(encoding="utf-8").split()
        except OSError as e:
            raise ConfigError(f"dashboard.token_file {token_file}: cannot read it ({e.strerror})") from None
        for n, line in enumerate(lines, 1):
            try:
                digest = bytes.fromhex(line.removeprefix("sha256:"))
            except ValueError:
                digest = b""
            if len(digest) != 32:  # the line is not shown: it may be a plaintext token
                raise ConfigError(
                    f"dashboard.token_file {token_file}: entry {n} is not a sha256 hex digest; "
                    "expected one 64-hex-digit digest per line, sha256: prefix allowed "
                    "(hamrah tokens --server-file writes them)"
                )
            self.digests.append(digest)
        if not self.digests:
            raise ConfigError(f"dashboard.token_file {token_file}: no digests; expected at least one")

    @property
    def required(self) -> bool:
        return bool(self.digests)

    def allows(self, token: str | None) -> bool:
        """Return True if no token is required, or ``token`` is one of the operator tokens."""
        if not self.digests:
            return True
        if not token:
            return False
        digest = hashlib.sha256(token.encode("utf-8", "replace")).digest()
        return any(hmac.compare_digest(digest, d) for d in self.digests)  # no early exit: constant time


__all__ = ["DashboardConfig", "TokenCheck", "check_exposure", "dashboard_config", "is_loopback"]
