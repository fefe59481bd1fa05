"""TLS credentials, device tokens, and certificate generation for tests and demos."""

from __future__ import annotations

import datetime
import hashlib
import hmac
import ipaddress
import os
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from hamrah.core.errors import ConfigError

TOKEN_HEADER = "authorization"


def token_metadata(token: str) -> tuple[tuple[str, str], ...]:
    """Return the call metadata that carries a device token."""
    return ((TOKEN_HEADER, f"Bearer {token}"),)


def token_from_metadata(metadata) -> str | None:
    """Return the bearer token of a call's metadata, or None."""
    for key, value in metadata or ():
        if key == TOKEN_HEADER and isinstance(value, str) and value.startswith("Bearer "):
            return value[len("Bearer "):]
    return None


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _read_lines(path: Path | None) -> list[str]:
    if path is None or not path.exists():
        return []
    return [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip() and not ln.startswith("#")]


class TokenRegistry:
    """The devices the server knows: one token per line in ``tokens_file``, minus those in ``revoked_file``.

    Files are reread when they change, so a token can be revoked while the server runs. Only
    sha256 digests are kept in memory; comparison is constant-time.
    """

    def __init__(self, tokens_file: str | Path, revoked_file: str | Path | None = None):
        self.tokens_file = Path(tokens_file)
        if not self.tokens_file.is_file():
            raise ConfigError(f"server.tokens_file = {str(tokens_file)!r}: file not found (one device token per line)")
        self.revoked_file = Path(revoked_file) if revoked_file else None
        self._stamp: tuple = ()
        self._known: set[str] = set()
        self._revoked: set[str] = set()

    def _reload(self) -> None:
        stamp = tuple(p.stat().st_mtime_ns if p and p.exists() else 0 for p in (self.tokens_file, self.revoked_file))
        if stamp != self._stamp:
            self._known = {_digest(t) for t in _read_lines(self.tokens_file)}
            self._revoked = {_digest(t) for t in _read_lines(self.revoked_file)}
            self._stamp = stamp

    def authenticate(self, token: str | None) -> str | None:
        """Return the device key (a digest prefix) for a known, unrevoked token, else None."""
        if not token:
            return None
        self._reload()
        d = _digest(token)
        known = any(hmac.compare_digest(d, k) for k in self._known)
        if not known or d in self._revoked:
            return None
        return d[:16]


def _read(path: str | Path | None, key: str) -> bytes | None:
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise ConfigError(f"{key} = {str(path)!r}: cannot read ({e.strerror})") from None


def server_credentials(cert: str | Path, key: str | Path, client_ca: str | Path | None = None) -> grpc.ServerCredentials:
    """Return TLS server credentials; with ``client_ca``, devices must present a certificate it signed (mTLS)."""
    pair = [(_read(key, "server.tls_key"), _read(cert, "server.tls_cert"))]
    ca = _read(client_ca, "server.client_ca")
    return grpc.ssl_server_credentials(pair, root_certificates=ca, require_client_auth=ca is not None)


def channel_credentials(ca: str | Path, cert: str | Path | None = None, key: str | Path | None = None) -> grpc.ChannelCredentials:
    """Return TLS channel credentials trusting ``ca``; with ``cert``/``key``, a client certificate for mTLS."""
    return grpc.ssl_channel_credentials(_read(ca, "--tls-ca"), _read(key, "--tls-key"), _read(cert, "--tls-cert"))


def _cert(subject: str, pub, signer_key, issuer: x509.Name | None, ca: bool, hosts: tuple[str, ...]) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    b = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer or name).public_key(pub)
         .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
         .not_valid_after(now + datetime.timedelta(days=365))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if hosts:
        alt = [x509.IPAddress(ipaddress.ip_address(h)) if h.replace(".", "").isdigit() else x509.DNSName(h) for h in hosts]
        b = b.add_extension(x509.SubjectAlternativeName(alt), critical=False)
    return b.sign(signer_key, hashes.SHA256())


def generate_tls(out_dir: str | Path, hosts: tuple[str, ...] = ("localhost", "127.0.0.1")) -> dict[str, Path]:
    """Write a CA, a server certificate for ``hosts`` and a client certificate (PEM) into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("hamrah test CA", ca_key.public_key(), ca_key, None, True, ())
    files = {"ca": out / "ca.pem"}
    files["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    for role, role_hosts in (("server", hosts), ("client", ())):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _cert(f"hamrah {role}", key.public_key(), ca_key, ca.subject, False, role_hosts)
        files[role], files[f"{role}_key"] = out / f"{role}.pem", out / f"{role}.key"
        files[role].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
        fd = os.open(files[f"{role}_key"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key_pem)
    return files
