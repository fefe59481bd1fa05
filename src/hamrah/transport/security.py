"""The server's device registry (hashed tokens, registered signing keys, certificate binding) and TLS
credentials (certificates: :mod:`hamrah.transport.certs`; see also :mod:`hamrah.transport.provision`)."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from hamrah.core.errors import ConfigError
from hamrah.transport.identity import NonceCache, RequestRefused, check_request, token_digest, token_from_metadata

log = logging.getLogger("hamrah.security")


@dataclass(frozen=True)
class DeviceRecord:
    """What the server knows about one device: never its token, only the token's sha256.

    Attributes:
        name: the device's name (``device-0007``; a digest prefix for a plain tokens file).
        token_sha256: hex sha256 of the device's bearer token.
        signing_key: the raw Ed25519 public key whose signature every call must carry (None: token only).
        cert_sha256: hex sha256 (DER) of the device's mTLS client certificate (None: not bound).
    """

    name: str
    token_sha256: str
    signing_key: bytes | None = None
    cert_sha256: str | None = None

    @property
    def key(self) -> str:
        """The server's key for this device (logs, task binding): a prefix of the token's digest."""
        return self.token_sha256[:16]


def _hex64(value, where: str) -> str:
    if not isinstance(value, str) or len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
        raise ConfigError(f"{where}: expected 64 lowercase hex digits (a sha256)")
    return value


def _json_records(text: str, path: Path) -> list[DeviceRecord]:
    try:
        doc = json.loads(text)
        entries = doc["devices"]
        assert isinstance(entries, list)
    except (ValueError, KeyError, TypeError, AssertionError):
        raise ConfigError(
            f'{path}: not a device registry (expected JSON {{"devices": [...]}} as `hamrah provision` writes)'
        ) from None
    out = []
    for i, e in enumerate(entries):
        where = f"{path}: device {i}"
        if not isinstance(e, dict) or not isinstance(e.get("name"), str):
            raise ConfigError(f"{where}: expected an object with name, token_sha256, signing_key")
        try:
            pub = base64.b64decode(e.get("signing_key") or "", validate=True)
        except ValueError:
            pub = b""
        if len(pub) != 32:
            raise ConfigError(f"{where} ({e['name']}): signing_key must be a base64 Ed25519 public key (32 bytes)")
        cert = e.get("cert_sha256")
        out.append(
            DeviceRecord(
                e["name"],
                _hex64(e.get("token_sha256"), f"{where} token_sha256"),
                pub,
                _hex64(cert, f"{where} cert_sha256") if cert is not None else None,
            )
        )
    return out


def _line_records(text: str, path: Path) -> list[DeviceRecord]:
    out, plain = [], 0
    for n, raw in enumerate(text.splitlines(), 1):
        ln = raw.strip()
        if not ln or ln.startswith("#"):
            continue
        if ln.startswith("sha256:"):
            d = _hex64(ln[len("sha256:") :], f"{path}: line {n}")
        elif any(c.isspace() for c in ln):  # never echo the line: it may be a token
            raise ConfigError(
                f"{path}: line {n} holds spaces; expected one token or sha256:<hex> digest per line, without spaces"
            )
        else:
            d, plain = token_digest(ln), plain + 1
        out.append(DeviceRecord(d[:16], d))
    if plain:
        log.warning(
            "%s holds %d plaintext tokens: keep only their digests on the server "
            "(`hamrah tokens --server-file`, or `hamrah provision`)",
            path,
            plain,
        )
    return out


RACY_NS = 2_000_000_000  # the coarsest mtime resolution of common file systems (FAT: 2 s)


def _file_stamp(path: Path | None) -> tuple[int, int, int] | None:
    """Return what tells a changed file: (mtime in ns, size, inode); None when there is no such file."""
    try:
        st = path.stat() if path is not None else None
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino) if st is not None else None


def _lines(text: str) -> list[str]:
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]


class TokenRegistry:
    """The devices the server knows, from ``tokens_file``, minus those in ``revoked_file``.

    ``tokens_file`` is either a device registry written by ``hamrah provision`` (JSON: per device a
    name, the sha256 of its token, its Ed25519 public key and its certificate's sha256: every call
    must then be signed, see :mod:`hamrah.transport.identity`), or one token per line, each a
    ``sha256:<hex>`` digest or (legacy, logged) the token itself. ``revoked_file`` lists tokens,
    ``sha256:<hex>`` digests or device names. Both are checked for changes at most every
    ``recheck_s`` seconds and reread when they change, so a device can be revoked while the server
    runs. Only digests are kept in memory.

    Attributes:
        refusals: calls refused so far, by reason.
    """

    def __init__(
        self,
        tokens_file: str | Path,
        revoked_file: str | Path | None = None,
        max_skew_s: float = 60.0,
        recheck_s: float = 0.2,
    ):
        self.tokens_file = Path(tokens_file)
        if not self.tokens_file.is_file():
            raise ConfigError(
                f"server.tokens_file = {str(tokens_file)!r}: file not found (a device registry from "
                "`hamrah provision`, or one token digest per line)"
            )
        self.revoked_file = Path(revoked_file) if revoked_file else None
        if self.revoked_file is not None and not self.revoked_file.is_file():  # a typo would revoke nobody
            raise ConfigError(
                f"server.revoked_file {str(revoked_file)!r}: no such file; expected the revocation list "
                "(an empty file revokes nobody)"
            )
        self.max_skew_s, self.recheck_s = max_skew_s, recheck_s
        self._checked = 0.0
        self.nonces = NonceCache(2 * max_skew_s)
        self.refusals: Counter[str] = Counter()
        self._stamp: tuple = ()
        self._failed: tuple | None = None
        self._racy = False
        self._content = b""
        self._known: dict[str, DeviceRecord] = {}
        self._revoked: set[str] = set()
        self._reload()
        if not self._known:  # the server would serve and abandon every round
            raise ConfigError(
                f"server.tokens_file {str(tokens_file)!r} holds no device token; expected at least one "
                "(hamrah tokens / hamrah provision)"
            )

    def _reload(self) -> None:
        now = time.monotonic()
        if self._stamp and now - self._checked < self.recheck_s:  # two stat calls per request otherwise
            return
        self._checked = now
        stamp = (_file_stamp(self.tokens_file), _file_stamp(self.revoked_file))
        if stamp == self._stamp and not self._racy:
            return
        try:
            if self.revoked_file is not None and stamp[1] is None:  # fail closed: keep the revocations
                raise ConfigError(
                    f"server.revoked_file {str(self.revoked_file)!r}: no such file; expected the revocation "
                    "list (an empty file revokes nobody)"
                )
            text = self.tokens_file.read_text(encoding="utf-8")
            revoked_text = self.revoked_file.read_text(encoding="utf-8") if self.revoked_file else ""
            content = hashlib.sha256(f"{len(text)}\0{text}{revoked_text}".encode()).digest()
            if content == self._content:  # a racy reread of unchanged files: no need to parse them again
                self._settle(stamp)
                return
            parse = _json_records if text.lstrip().startswith("{") else _line_records
            known = {r.token_sha256: r for r in parse(text, self.tokens_file)}
            revoked_lines = _lines(revoked_text)
        except (OSError, UnicodeDecodeError, ConfigError) as e:
            if not self._stamp:
                raise ConfigError(f"server.tokens_file = {str(self.tokens_file)!r}: {e}") from None
            if stamp != self._failed:  # once per change, not every recheck
                log.error("kept the previous device registry: %s", e)
            self._failed = stamp
            return
        revoked = {ln[len("sha256:") :] if ln.startswith("sha256:") else token_digest(ln) for ln in revoked_lines}
        names = set(revoked_lines)
        self._revoked = revoked | {d for d, r in known.items() if r.name in names}
        self._known, self._content = known, content
        self._settle(stamp)

    def _settle(self, stamp: tuple) -> None:
        self._stamp, self._failed = stamp, None
        # A file changed again within its mtime's resolution keeps its stamp: reread until it is older.
        self._racy = any(s is not None and time.time_ns() - s[0] < RACY_NS for s in stamp)

    def record(self, token: str | None) -> DeviceRecord | None:
        """Return the record of a known, unrevoked token, else None."""
        if not token:
            return None
        self._reload()
        d = token_digest(token)
        rec = self._known.get(d)  # d is a digest of the caller's token: a dict lookup leaks nothing of others'
        return None if rec is None or d in self._revoked else rec

    def by_key(self, key: str) -> DeviceRecord | None:
        """Return the record of the device whose server key (``DeviceRecord.key``) is ``key``, else None.

        For protocols that check a device's own signatures (e.g. secure-aggregation key advertisements
        signed with ``DeviceKey.sign``): its ``signing_key`` is the public key to verify them with.
        """
        self._reload()
        return next((r for d, r in self._known.items() if r.key == key and d not in self._revoked), None)

    def count(self) -> int:
        """Return the number of registered devices that are not revoked."""
        self._reload()
        return sum(1 for d in self._known if d not in self._revoked)

    def bound_devices(self) -> list[str]:
        """Return the names of the registered devices whose entry holds a certificate sha256 (bound to it)."""
        self._reload()
        return sorted(r.name for r in self._known.values() if r.cert_sha256 is not None)

    def unsigned_devices(self) -> list[str]:
        """Return the names of the registered devices without an Ed25519 signing key (a plain tokens file: all)."""
        self._reload()
        return sorted(r.name for r in self._known.values() if r.signing_key is None)

    def authenticate(self, token: str | None) -> str | None:
        """Return the device key for a known, unrevoked token, else None (the token alone; no signature check)."""
        rec = self.record(token)
        return rec.key if rec is not None else None

    def verify(self, metadata, method: str, peer_cert_sha256: str | None = None) -> DeviceRecord:
        """Authenticate one call: token, then (for registered keys) signature, freshness, nonce, certificate.

        Args:
            metadata: the call's invocation metadata (key, value pairs).
            method: the RPC being served, e.g. ``"Report"`` (signed, so a signature cannot move to another call).
            peer_cert_sha256: sha256 of the caller's TLS client certificate (DER), when it presented one.

        Returns:
            The caller's record.

        Raises:
            RequestRefused: naming why (counted in ``refusals``).
        """
        try:
            return self._verify(metadata, method, peer_cert_sha256)
        except RequestRefused as e:
            self.refusals[e.reason] += 1
            raise

    def _verify(self, metadata, method: str, peer_cert_sha256: str | None) -> DeviceRecord:
        md = {k: v for k, v in metadata or () if isinstance(v, str)}
        token = token_from_metadata(metadata)
        if not token:
            raise RequestRefused("no token", "no device token (expected metadata authorization: Bearer <token>)")
        self._reload()
        d = token_digest(token)
        rec = self._known.get(d)
        if rec is None:
            raise RequestRefused("unknown token", "unknown device token")
        if d in self._revoked:
            raise RequestRefused("revoked", f"device {rec.name}: its token is revoked")
        if rec.cert_sha256 is not None and peer_cert_sha256 is not None and peer_cert_sha256 != rec.cert_sha256:
            raise RequestRefused(
                "certificate mismatch",
                f"the client certificate is not {rec.name}'s: a token is valid only with its own device's certificate",
            )
        if rec.signing_key is not None:
            check_request(md, method, d, rec.signing_key, self.nonces, self.max_skew_s)
        return rec


def _read(path: str | Path | None, key: str) -> bytes | None:
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise ConfigError(f"{key} = {str(path)!r}: cannot read ({e.strerror})") from None


def _pem_certs(data: bytes, path: str | Path, key: str) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError:
        raise ConfigError(
            f"{key} = {str(path)!r}: not a PEM certificate; expected -----BEGIN CERTIFICATE----- blocks "
            "(hamrah provision writes them)"
        ) from None


def _spki(public_key) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def check_server_tls(cert: str | Path, key: str | Path, client_ca: str | Path | None = None) -> list[bytes | None]:
    """Read and check the server's TLS files before gRPC sees them: each must be PEM and the private key
    must be the certificate's (gRPC's own error would only say that the port could not be bound).

    Returns:
        The bytes of ``[key, cert, client_ca]`` (``client_ca`` None when not set).

    Raises:
        ConfigError: naming the file and its config key (``server.tls_cert``, ``server.tls_key``, ``server.client_ca``).
    """
    key_pem, cert_pem = _read(key, "server.tls_key"), _read(cert, "server.tls_cert")
    ca = _read(client_ca, "server.client_ca")
    certs = _pem_certs(cert_pem, cert, "server.tls_cert")
    try:
        private = serialization.load_pem_private_key(key_pem, password=None)
    except TypeError:
        raise ConfigError(
            f"server.tls_key = {str(key)!r}: the key is encrypted; expected an unencrypted PEM private key"
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        raise ConfigError(
            f"server.tls_key = {str(key)!r}: not a PEM private key; expected -----BEGIN PRIVATE KEY----- "
            "(the key of server.tls_cert)"
        ) from None
    if _spki(private.public_key()) != _spki(certs[0].public_key()):
        raise ConfigError(
            f"server.tls_key = {str(key)!r} is not the key of server.tls_cert = {str(cert)!r}; "
            "expected the private key the certificate was issued for"
        )
    if ca is not None:
        _pem_certs(ca, client_ca, "server.client_ca")
    return [key_pem, cert_pem, ca]


def server_credentials(
    cert: str | Path, key: str | Path, client_ca: str | Path | None = None
) -> grpc.ServerCredentials:
    """Return TLS server credentials; with ``client_ca``, devices must present a certificate it signed (mTLS).

    Raises:
        ConfigError: a file is missing, not PEM, or the key is not the certificate's (see :func:`check_server_tls`).
    """
    key_pem, cert_pem, ca = check_server_tls(cert, key, client_ca)
    return grpc.ssl_server_credentials([(key_pem, cert_pem)], root_certificates=ca, require_client_auth=ca is not None)


def channel_credentials(
    ca: str | Path, cert: str | Path | None = None, key: str | Path | None = None
) -> grpc.ChannelCredentials:
    """Return TLS channel credentials trusting ``ca``; with ``cert``/``key``, a client certificate for mTLS."""
    return grpc.ssl_channel_credentials(_read(ca, "--tls-ca"), _read(key, "--tls-key"), _read(cert, "--tls-cert"))
