"""Certificates for a group of parties: one CA, and per party a server and a client certificate.

A party's common name is its party name: the receiving party reads the sender's name from the TLS
client certificate (``hamrah.parties.channel``). Built on ``transport.certs.make_cert`` (key usage
per role: server certificates for TLS server authentication only, client certificates for client
authentication only); private keys are written 0600.
"""

from __future__ import annotations

from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from hamrah.core.errors import ConfigError
from hamrah.parties.channel import TLSFiles
from hamrah.transport.certs import key_pem, make_cert, pem
from hamrah.transport.identity import write_private


def make_party_tls(
    out_dir: str | Path, names: list[str] | tuple[str, ...], hosts: tuple[str, ...] = ("localhost", "127.0.0.1")
) -> dict[str, TLSFiles]:
    """Write ``ca.pem`` and ``<name>-server.pem/.key``, ``<name>-client.pem/.key`` for each party.

    A server certificate names its party as a subject alternative name beside ``hosts``: callers
    accept only the server certificate of the peer they meant (:mod:`hamrah.parties.channel`).

    Returns:
        Each party's :class:`TLSFiles`.

    Raises:
        ConfigError: no party name, a name that is empty, repeated or not a plain word, or ``out_dir``
            already holding a CA (a new one would void the certificates made with it) or not a folder.
    """
    if not names:
        raise ConfigError("party names: expected at least one (--names guest,host)")
    if len(set(names)) != len(names) or not all(n and n.replace("-", "").replace("_", "").isalnum() for n in names):
        raise ConfigError(f"party names: expected distinct plain words, got {list(names)}")
    out = Path(out_dir)
    if (out / "ca.pem").exists():
        raise ConfigError(
            f"{out}: already holds a CA (ca.pem); a new one would void every certificate made with it. "
            "Expected a new folder"
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"{out}: cannot make the folder ({e.strerror}); expected a new folder") from None
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = make_cert("ca", "hamrah parties CA", ca_key.public_key(), ca_key)
    (out / "ca.pem").write_bytes(pem(ca))
    files = {}
    for name in names:
        for role, role_hosts in (("server", (*hosts, name)), ("client", ())):
            key = ec.generate_private_key(ec.SECP256R1())
            (out / f"{name}-{role}.pem").write_bytes(
                pem(make_cert(role, name, key.public_key(), ca_key, ca.subject, role_hosts))
            )
            write_private(out / f"{name}-{role}.key", key_pem(key))
        files[name] = TLSFiles(
            str(out / "ca.pem"),
            str(out / f"{name}-server.pem"),
            str(out / f"{name}-server.key"),
            str(out / f"{name}-client.pem"),
            str(out / f"{name}-client.key"),
        )
    return files


def _read(path: str, key: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise ConfigError(f"tls.{key} = {path!r}: cannot read ({e.strerror})") from None


def _cert(path: str, key: str) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificates(_read(path, key))[0]
    except ValueError:
        raise ConfigError(
            f"tls.{key} = {path!r}: not a PEM certificate; expected the file `hamrah party --make-tls` wrote"
        ) from None


def _spki(public) -> bytes:
    return public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def check_party_tls(files: TLSFiles) -> None:
    """Check a party's ``[tls]`` files before gRPC sees them: each readable PEM, each private key the
    key of its certificate (gRPC would only fail the handshake later, blaming the peer's certificate).

    Raises:
        ConfigError: naming the ``[tls]`` key and file at fault and what was expected.
    """
    _cert(files.ca, "ca")
    for cert_key, key_key in (("cert", "key"), ("client_cert", "client_key")):
        cert_path, key_path = getattr(files, cert_key), getattr(files, key_key)
        cert, pem_key = _cert(cert_path, cert_key), _read(key_path, key_key)
        try:
            private = serialization.load_pem_private_key(pem_key, password=None)
        except (TypeError, ValueError, UnsupportedAlgorithm):
            raise ConfigError(
                f"tls.{key_key} = {key_path!r}: not an unencrypted PEM private key; expected the key of tls.{cert_key}"
            ) from None
        if _spki(private.public_key()) != _spki(cert.public_key()):
            raise ConfigError(
                f"tls.{key_key} = {key_path!r} is not the key of tls.{cert_key} = {cert_path!r}; expected the "
                "private key that certificate was made for"
            )


__all__ = ["check_party_tls", "make_party_tls"]
