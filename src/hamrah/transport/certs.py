"""Certificates with proper key usage (a CA, TLS servers, TLS clients), PEM helpers and a test TLS
set (see :mod:`hamrah.transport.provision` for real deployments)."""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from hamrah.core.errors import ConfigError
from hamrah.transport.identity import write_private

ROLES = ("ca", "server", "client")


def _usage(role: str, pub, issuer_pub) -> list[tuple[x509.ExtensionType, bool]]:
    """Return the extensions of a certificate for ``role``: a CA signs certificates only; a server
    certificate is good for TLS server authentication only, a client certificate for client
    authentication only (RFC 5280 key usage and extended key usage)."""
    usages = (
        "digital_signature",
        "content_commitment",
        "key_encipherment",
        "data_encipherment",
        "key_agreement",
        "key_cert_sign",
        "crl_sign",
        "encipher_only",
        "decipher_only",
    )
    ku = {name: False for name in usages}
    ext: list[tuple[x509.ExtensionType, bool]] = [
        (x509.BasicConstraints(ca=role == "ca", path_length=0 if role == "ca" else None), True),
        (x509.SubjectKeyIdentifier.from_public_key(pub), False),
    ]
    if role == "ca":
        ext.append((x509.KeyUsage(**{**ku, "key_cert_sign": True, "crl_sign": True}), True))
        return ext
    ext.append((x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_pub), False))
    ext.append((x509.KeyUsage(**{**ku, "digital_signature": True}), True))
    purpose = ExtendedKeyUsageOID.SERVER_AUTH if role == "server" else ExtendedKeyUsageOID.CLIENT_AUTH
    ext.append((x509.ExtendedKeyUsage([purpose]), True))
    return ext


def make_cert(
    role: str,
    subject: str,
    pub,
    signer_key,
    issuer: x509.Name | None = None,
    hosts: tuple[str, ...] = (),
    days: int = 365,
) -> x509.Certificate:
    """Return a certificate for ``role`` ("ca", "server" or "client") with that role's key usage.

    Args:
        role: "ca" (self-signed when ``issuer`` is None), "server" (``hosts`` become its subject
            alternative names) or "client".
        subject: the common name.
        pub, signer_key: the subject's public key and the issuer's private key.
        issuer: the issuer's name (None: self-signed).
        hosts: DNS names or IP addresses (server certificates).
        days: validity.

    Raises:
        ConfigError: an unknown role.
    """
    if role not in ROLES:
        raise ConfigError(f"certificate role {role!r}: expected one of {', '.join(ROLES)}")
    now = datetime.datetime.now(datetime.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    b = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer or name)
        .public_key(pub)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
    )
    for ext, critical in _usage(role, pub, signer_key.public_key()):
        b = b.add_extension(ext, critical=critical)
    if hosts:
        alt = [_host(h) for h in hosts]
        b = b.add_extension(x509.SubjectAlternativeName(alt), critical=False)
    return b.sign(signer_key, hashes.SHA256())


def _host(h: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(h))
    except ValueError:
        return x509.DNSName(h)


def pem(cert: x509.Certificate) -> bytes:
    """Return a certificate as PEM bytes."""
    return cert.public_bytes(serialization.Encoding.PEM)


def cert_sha256(cert: x509.Certificate | bytes) -> str:
    """Return the hex sha256 of a certificate's DER bytes (``cert`` an object or PEM bytes)."""
    if isinstance(cert, bytes):
        cert = x509.load_pem_x509_certificate(cert)
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def key_pem(key) -> bytes:
    """Return a private key as unencrypted PKCS#8 PEM (write it with ``write_private``)."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def generate_tls(out_dir: str | Path, hosts: tuple[str, ...] = ("localhost", "127.0.0.1")) -> dict[str, Path]:
    """Write a CA, a server certificate for ``hosts`` and a client certificate (PEM) into ``out_dir``.

    The server certificate is valid for TLS server authentication only and the client certificate for
    client authentication only; private keys are written 0600. For real deployments use
    ``hamrah provision`` (one folder per party, device tokens and signing keys).

    Returns:
        Paths: ``ca``, ``server``, ``server_key``, ``client``, ``client_key``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = make_cert("ca", "hamrah test CA", ca_key.public_key(), ca_key)
    files = {"ca": out / "ca.pem"}
    files["ca"].write_bytes(pem(ca))
    for role, role_hosts in (("server", hosts), ("client", ())):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = make_cert(role, f"hamrah {role}", key.public_key(), ca_key, ca.subject, role_hosts)
        files[role], files[f"{role}_key"] = out / f"{role}.pem", out / f"{role}.key"
        files[role].write_bytes(pem(cert))
        write_private(files[f"{role}_key"], key_pem(key))
    return files


def peer_cert_sha256(auth_context: dict) -> str | None:
    """Return the sha256 of the TLS client certificate in a gRPC call's ``auth_context()``, or None."""
    certs = (auth_context or {}).get("x509_pem_cert") or []
    return cert_sha256(certs[0]) if certs else None
