"""Provisioning: one folder of credentials per party, made once by the operator (the idea of NVIDIA
FLARE's startup kits: each participant receives a kit that holds everything it needs and nothing of
the others').

``provision(out, devices=N)`` writes::

    out/ca/           ca.pem, ca.key               the CA (keep its key offline; needed to add devices)
    out/server/       ca.pem, server.pem, server.key, devices.json
    out/devices/device-0000/  ca.pem, client.pem, client.key, token, signing.key, identity.pem
    ...

``devices.json`` is the server's device registry: per device its name, the sha256 of its token (never
the token), its Ed25519 public key and the sha256 of its client certificate. ``identity.pem`` is the
CA's certificate of the device's Ed25519 key (for secure aggregation against a malicious server:
devices check each other's keys with the CA, not the server). The server certificate
is good for TLS server authentication only, device certificates for client authentication only.
Every private file (keys, tokens, the registry) is written 0600. Running it again with a larger
``devices`` keeps the CA, the server's credentials and the existing devices, and adds the new ones.
"""

from __future__ import annotations

import base64
import json
import secrets
from dataclasses import dataclass, replace
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from hamrah.core.errors import ConfigError
from hamrah.core.files import check_writable_folder
from hamrah.transport.certs import cert_sha256, key_pem, make_cert, pem
from hamrah.transport.identity import IDENTITY_CERT, DeviceKey, identity_certificate, token_digest, write_private

REGISTRY = "devices.json"
DEVICE_FILES = ("ca.pem", "client.pem", "client.key", "token", "signing.key")
MAX_DEVICES = 100_000  # one folder of six files per device: more is a mistyped count


@dataclass(frozen=True)
class DeviceCredentials:
    """One device's kit, as paths (see :func:`provision`).

    Attributes:
        name: the device's name (its folder's name).
        token: the bearer token.
        signing_key: its Ed25519 signing key (PEM).
        tls_ca, tls_cert, tls_key: the CA to trust and the device's client certificate and key.
    """

    name: str
    token: str
    signing_key: str
    tls_ca: str
    tls_cert: str
    tls_key: str

    @staticmethod
    def load(folder: str | Path) -> DeviceCredentials:
        """Read a device folder written by :func:`provision`.

        Raises:
            ConfigError: a file is missing or the token file is empty.
        """
        d = Path(folder)
        missing = [f for f in DEVICE_FILES if not (d / f).is_file()]
        if missing:
            raise ConfigError(
                f"device credentials {str(d)!r}: missing {', '.join(missing)} (expected a folder "
                "written by `hamrah provision`)"
            )
        token = (d / "token").read_text(encoding="utf-8").strip()
        if not token:
            raise ConfigError(f"device credentials {str(d)!r}: the token file is empty")
        return DeviceCredentials(
            d.name, token, str(d / "signing.key"), str(d / "ca.pem"), str(d / "client.pem"), str(d / "client.key")
        )

    def apply(self, cfg):
        """Return a ``DeviceConfig`` (any frozen dataclass with these fields) that uses this kit."""
        return replace(
            cfg,
            token=self.token,
            signing_key=self.signing_key,
            tls_ca=self.tls_ca,
            tls_cert=self.tls_cert,
            tls_key=self.tls_key,
        )


def device_folders(devices_dir: str | Path, count: int) -> list[DeviceCredentials]:
    """Return the first ``count`` device kits of a provisioned ``devices`` folder (by name).

    Raises:
        ConfigError: the folder is missing or holds fewer than ``count`` kits.
    """
    d = Path(devices_dir)
    if (d / "devices").is_dir():  # the provisioning folder itself
        d = d / "devices"
    folders = sorted(p for p in d.iterdir() if p.is_dir()) if d.is_dir() else []
    if len(folders) < count:
        raise ConfigError(
            f"{str(d)!r}: holds {len(folders)} device kits, {count} needed "
            f"(`hamrah provision {d.parent} --devices {count}` adds the missing ones)"
        )
    return [DeviceCredentials.load(p) for p in folders[:count]]


def _read_pem(path: Path, load, what: str):
    """Return ``load(bytes)`` of a PEM file this module wrote.

    Raises:
        ConfigError: the file cannot be read or is not a PEM ``what`` (names the file).
    """
    try:
        return load(path.read_bytes())
    except OSError as e:
        raise ConfigError(f"{path}: cannot read ({e.strerror})") from None
    except (ValueError, TypeError):
        raise ConfigError(
            f"{path}: not a PEM {what}; expected the one `hamrah provision` wrote (restore it from a backup)"
        ) from None


def _load_ca(ca_dir: Path):
    key = _read_pem(ca_dir / "ca.key", lambda b: serialization.load_pem_private_key(b, password=None), "private key")
    return key, _read_pem(ca_dir / "ca.pem", x509.load_pem_x509_certificate, "certificate")


def _ensure_ca(out: Path):
    ca_dir = out / "ca"
    have = [(ca_dir / f).is_file() for f in ("ca.key", "ca.pem")]
    if all(have):
        return _load_ca(ca_dir)
    if any(have):  # a new CA would not be the one the existing kits trust
        there, gone = ("ca.key", "ca.pem") if have[0] else ("ca.pem", "ca.key")
        raise ConfigError(
            f"{ca_dir / gone}: missing beside {there}; expected both files `hamrah provision` wrote (restore it)"
        )
    key = ec.generate_private_key(ec.SECP256R1())
    ca = make_cert("ca", "hamrah CA", key.public_key(), key, days=3650)
    write_private(ca_dir / "ca.key", key_pem(key))
    (ca_dir / "ca.pem").write_bytes(pem(ca))
    return key, ca


def _ensure_server(out: Path, ca_key, ca, hosts: tuple[str, ...]) -> None:
    d = out / "server"
    if (d / "server.pem").is_file() and (d / "server.key").is_file():
        return
    key = ec.generate_private_key(ec.SECP256R1())
    write_private(d / "server.key", key_pem(key))
    (d / "server.pem").write_bytes(
        pem(make_cert("server", "hamrah server", key.public_key(), ca_key, ca.subject, hosts))
    )
    (d / "ca.pem").write_bytes(pem(ca))


def _new_device(d: Path, name: str, ca_key, ca) -> dict:
    tls_key = ec.generate_private_key(ec.SECP256R1())
    cert = make_cert("client", name, tls_key.public_key(), ca_key, ca.subject)
    signing, token = DeviceKey.generate(), secrets.token_urlsafe(32)
    (d / "ca.pem").parent.mkdir(parents=True, exist_ok=True)
    (d / "ca.pem").write_bytes(pem(ca))
    (d / "client.pem").write_bytes(pem(cert))
    write_private(d / "client.key", key_pem(tls_key))
    signing.save(d / "signing.key")
    (d / IDENTITY_CERT).write_bytes(pem(identity_certificate(name, signing.public_bytes, ca_key, ca)))
    write_private(d / "token", (token + "\n").encode())
    return _entry(name, token, signing, cert)


def _entry(name: str, token: str, signing: DeviceKey, cert: x509.Certificate) -> dict:
    return {
        "name": name,
        "token_sha256": token_digest(token),
        "signing_key": base64.b64encode(signing.public_bytes).decode("ascii"),
        "cert_sha256": cert_sha256(cert),
    }


def _existing_device(d: Path) -> tuple[dict, DeviceKey]:
    """Return an existing kit's registry entry and signing key (nothing written).

    Raises:
        ConfigError: a file of the kit is missing or damaged (names it).
    """
    kit = DeviceCredentials.load(d)
    cert = _read_pem(Path(kit.tls_cert), x509.load_pem_x509_certificate, "certificate")
    signing = DeviceKey.load(kit.signing_key)
    return _entry(kit.name, kit.token, signing, cert), signing


def _keep_device(d: Path, entry: dict, signing: DeviceKey, ca_key, ca) -> dict:
    if not (d / IDENTITY_CERT).is_file():  # kits made before identity certificates: add one
        (d / IDENTITY_CERT).write_bytes(pem(identity_certificate(entry["name"], signing.public_bytes, ca_key, ca)))
    return entry


def provision(
    out: str | Path, devices: int, hosts: tuple[str, ...] = ("localhost", "127.0.0.1"), prefix: str = "device"
) -> dict[str, Path]:
    """Make (or extend) a provisioning folder: a CA, the server's kit and ``devices`` device kits.

    Args:
        out: the folder.
        devices: how many device kits it should hold (existing ones are kept).
        hosts: the names and addresses devices use to reach the server (the server certificate's SANs).
        prefix: device names are ``{prefix}-0000``, ``{prefix}-0001``...

    Returns:
        Paths: ``ca``, ``server`` (the server's folder), ``registry``, ``devices`` (the devices' folder).

    Raises:
        ConfigError: ``devices`` is not from 1 to :data:`MAX_DEVICES`, ``hosts`` is empty, ``out`` is a
            file or lies under one, or an existing kit or the CA is damaged (checked before a new kit is
            written).
    """
    if not 1 <= devices <= MAX_DEVICES:
        raise ConfigError(f"--devices {devices}: expected at least 1 and at most {MAX_DEVICES:,}")
    if not hosts or not all(h.strip() for h in hosts):
        raise ConfigError("--hosts: expected at least one host name or address of the server")
    if not prefix.replace("-", "").replace("_", "").isalnum():
        raise ConfigError(f"--prefix {prefix!r}: expected letters, digits, '-' or '_'")
    out = Path(out)
    check_writable_folder(out, "provision")
    folders = [out / "devices" / f"{prefix}-{i:04d}" for i in range(devices)]
    for d in folders:
        if d.exists() and not d.is_dir():
            raise ConfigError(f"{d}: is a file; expected a device kit folder (move the file away)")
    existing = {d: _existing_device(d) for d in folders if d.is_dir()}  # every kit checked before any write
    ca_key, ca = _ensure_ca(out)
    _ensure_server(out, ca_key, ca, tuple(h.strip() for h in hosts))
    entries = [
        _keep_device(d, *existing[d], ca_key, ca) if d in existing else _new_device(d, d.name, ca_key, ca)
        for d in folders
    ]
    registry = out / "server" / REGISTRY
    write_private(registry, json.dumps({"version": 1, "devices": entries}, indent=1).encode())
    return {"ca": out / "ca", "server": out / "server", "registry": registry, "devices": out / "devices"}


def kits_beside(tokens_file: str | Path) -> Path | None:
    """Return the devices folder of the provisioning folder whose registry is ``tokens_file``, or None
    when ``tokens_file`` is not a provisioned registry (a fleet on the server's machine finds its kits)."""
    p = Path(tokens_file)
    if p.name != REGISTRY or p.parent.name != "server":
        return None
    d = p.parent.parent / "devices"
    return d if d.is_dir() else None
