"""Device identity that cannot be replayed: Ed25519 device keys and signed, fresh, single-use requests.

Every device holds an Ed25519 signing key (RFC 8032) whose public half the server registered at
provisioning time (:mod:`hamrah.transport.provision`). Each call carries, beside its bearer token, a
timestamp, a random nonce and a signature over ``(purpose, method, timestamp, nonce, sha256(token))``.
The server (:class:`hamrah.transport.security.TokenRegistry`) checks the signature under the key
registered for that token, that the timestamp is within ``max_skew_s`` of its clock, and that it has
not seen the nonce before (:class:`NonceCache`). A captured request cannot be replayed, a stolen token
is useless without the device's signing key, and a device's key cannot be used with another device's
token. The scheme follows the idea of Flower's SuperNode authentication (a registered node key that
signs a timestamp in the call metadata) and adds a nonce, so the freshness window cannot be used to
replay a request.

Signatures cover metadata only (a few hundred bytes), never the update payload: its integrity on
the wire is TLS's job, and a round's task binding (:mod:`hamrah.server.coordinator`) stops a device
from reporting for another one.

:class:`DeviceKey` is also the API for signing other protocol messages with the same key (e.g.
secure-aggregation key advertisements): ``key.sign("secagg-advertise", data)`` and
``verify_signature(public, "secagg-advertise", data, sig)``; the purpose string keeps signatures of
different kinds from standing in for each other. For the actively secure SecAgg, the CA also signs an
identity certificate per device (:func:`identity_certificate`, ``identity.pem`` in its kit) binding its
name to this key, so that devices can check each other's keys with the CA alone (:func:`verify_identity`).
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import heapq
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.x509.oid import NameOID

from hamrah.core.errors import AuthError, ConfigError
from hamrah.core.files import write_atomic

TS_HEADER, NONCE_HEADER, SIG_HEADER, KEY_HEADER = "hamrah-ts", "hamrah-nonce", "hamrah-sig", "hamrah-key"
DEVICE_HEADER, TOKEN_HEADER = "hamrah-device", "authorization"
REQUEST_PURPOSE = "request"
NONCE_BYTES = 16
_NONCE = re.compile(f"[0-9a-f]{{{2 * NONCE_BYTES}}}")


def token_metadata(token: str) -> tuple[tuple[str, str], ...]:
    """Return the call metadata that carries a device token (no signature: see :class:`RequestSigner`)."""
    return ((TOKEN_HEADER, f"Bearer {token}"),)


def token_from_metadata(metadata) -> str | None:
    """Return the bearer token of a call's metadata, or None."""
    for key, value in metadata or ():
        if key == TOKEN_HEADER and isinstance(value, str) and value.startswith("Bearer "):
            return value[len("Bearer ") :]
    return None


def token_digest(token: str) -> str:
    """Return the hex sha256 of a device token: what the server stores instead of the token."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def key_id(public: bytes) -> str:
    """Return a short public name of a public key: the first 16 hex digits of its sha256."""
    return hashlib.sha256(public).hexdigest()[:16]


def anonymous_key(name: str) -> str:
    """Return the key of a device on a server without tokens: ``anon-`` and a digest prefix of the name
    it sends on every call (:data:`DEVICE_HEADER`), so all its calls (check-in, download, report) map to
    one device. Such a name is a claim, not a proof: see ``docs/system.md``."""
    return "anon-" + hashlib.sha256(name.encode("utf-8")).hexdigest()[:16]


def write_private(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` readable by its owner only (mode 0600), all or nothing, making its
    folder if needed (:func:`hamrah.core.files.write_atomic`: a reader never sees a half-written or
    world-readable file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_atomic(path, data, private=True)


def _message(purpose: str, data: bytes) -> bytes:
    return b"hamrah/" + purpose.encode("utf-8") + b"\0" + data


@dataclass(frozen=True)
class DeviceKey:
    """A device's Ed25519 signing key.

    Example:
        >>> key = DeviceKey.generate()
        >>> verify_signature(key.public_bytes, "demo", b"hi", key.sign("demo", b"hi"))
        True
    """

    private: Ed25519PrivateKey

    @staticmethod
    def generate() -> DeviceKey:
        """Return a fresh key from the operating system's random source."""
        return DeviceKey(Ed25519PrivateKey.generate())

    @staticmethod
    def load(path: str | Path) -> DeviceKey:
        """Read a PEM (PKCS#8) Ed25519 private key.

        Raises:
            ConfigError: the file is missing or is not an unencrypted Ed25519 private key.
        """
        try:
            key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
        except OSError as e:
            raise ConfigError(f"signing key {str(path)!r}: cannot read ({e.strerror})") from None
        except (ValueError, TypeError):
            raise ConfigError(
                f"signing key {str(path)!r}: not a PEM private key (expected an unencrypted "
                "Ed25519 key, as `hamrah provision` writes)"
            ) from None
        if not isinstance(key, Ed25519PrivateKey):
            raise ConfigError(f"signing key {str(path)!r}: a {type(key).__name__}, expected an Ed25519 key")
        return DeviceKey(key)

    def save(self, path: str | Path) -> Path:
        """Write the key as PEM (PKCS#8), mode 0600."""
        pem = self.private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        return write_private(path, pem)

    @property
    def public_bytes(self) -> bytes:
        """The 32-byte raw public key (what the server registers)."""
        return self.private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    def sign(self, purpose: str, data: bytes) -> bytes:
        """Sign ``data`` for ``purpose`` (domain-separated: a signature of one purpose never verifies for another)."""
        return self.private.sign(_message(purpose, data))


IDENTITY_CERT = "identity.pem"
"""The file name of a device's identity certificate in its kit, beside ``signing.key``."""


def identity_certificate(name: str, public: bytes, ca_key, ca: x509.Certificate, days: int = 3650) -> x509.Certificate:
    """Return the CA's certificate binding device ``name`` to its raw Ed25519 public key ``public``.

    It is what lets one device check another's secure-aggregation signatures without trusting the
    server (which only relays it): key usage digital signature only, not a CA, signed by the operator's
    CA key (kept offline by ``hamrah provision``).
    """
    now = datetime.datetime.now(datetime.timezone.utc)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.subject)
        .public_key(Ed25519PublicKey.from_public_bytes(public))
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
    )
    return builder.sign(ca_key, hashes.SHA256())


def certified_key(der: bytes) -> tuple[str, bytes]:
    """Return (name, raw Ed25519 public key) of an identity certificate, without checking who signed it
    (the server compares the key with its registry; devices use :func:`verify_identity`).

    Raises:
        AuthError: not a DER certificate of an Ed25519 key with a name.
    """
    try:
        cert = x509.load_der_x509_certificate(bytes(der))
        key = cert.public_key()
        names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    except (ValueError, TypeError):
        raise AuthError("identity certificate: not a DER X.509 certificate") from None
    if not isinstance(key, Ed25519PublicKey) or not names:
        raise AuthError("identity certificate: expected a named device's Ed25519 key")
    return str(names[0].value), key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def verify_identity(der: bytes, ca: x509.Certificate, now: datetime.datetime | None = None) -> tuple[str, bytes]:
    """Check a device identity certificate against the CA; return (device name, raw Ed25519 public key).

    Raises:
        AuthError: not a DER certificate, not signed by ``ca``, outside its validity, not an Ed25519
            signing-only end-entity certificate, or without a name; the message names which.
    """
    try:
        cert = x509.load_der_x509_certificate(bytes(der))
    except (ValueError, TypeError):
        raise AuthError("identity certificate: not a DER X.509 certificate") from None
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        raise AuthError(
            "identity certificate: not signed by this device's CA (a certificate the server or "
            "anyone else made up, or of another fleet)"
        ) from None
    now = now or datetime.datetime.now(datetime.timezone.utc)
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise AuthError(f"identity certificate of {cert.subject.rfc4514_string()}: expired or not yet valid")
    key = cert.public_key()
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        ca_flag = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        raise AuthError("identity certificate: key usage or basic constraints missing") from None
    if not isinstance(key, Ed25519PublicKey) or not usage.digital_signature or usage.key_cert_sign or ca_flag:
        raise AuthError(
            "identity certificate: expected an Ed25519 signing key of an end device (not a CA, not a TLS certificate)"
        )
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not names or not str(names[0].value):
        raise AuthError("identity certificate: no device name (common name)")
    return str(names[0].value), key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def verify_signature(public: bytes, purpose: str, data: bytes, signature: bytes) -> bool:
    """Return whether ``signature`` is ``public``'s signature of ``data`` for ``purpose``."""
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(signature, _message(purpose, data))
    except (InvalidSignature, ValueError):
        return False
    return True


def request_data(method: str, ts_ms: int, nonce: str, token_sha256: str) -> bytes:
    """Return the bytes a request signature covers."""
    return f"{method}\n{ts_ms}\n{nonce}\n{token_sha256}".encode()


class RequestSigner:
    """Make the call metadata of one device: token, device name, and a fresh signature per call.

    Args:
        token: the device's bearer token (None: an unauthenticated server).
        key: the device's signing key (None: token only, for servers with a plain tokens file).
        device_id: the device's name, sent on every call (an unauthenticated server keys devices by it).
    """

    def __init__(self, token: str | None, key: DeviceKey | None, device_id: str):
        self.token, self.key, self.device_id = token, key, device_id
        self._digest = token_digest(token) if token else ""
        self._key_id = key_id(key.public_bytes) if key else ""

    def metadata(self, method: str) -> tuple[tuple[str, str], ...]:
        """Return the metadata for one call of ``method`` (e.g. ``"CheckIn"``); never reuse it."""
        md = [(DEVICE_HEADER, self.device_id)]
        if self.token:
            md += token_metadata(self.token)
        if self.key is not None and self.token:
            ts, nonce = int(time.time() * 1000), secrets.token_hex(NONCE_BYTES)
            sig = self.key.sign(REQUEST_PURPOSE, request_data(method, ts, nonce, self._digest))
            md += [
                (TS_HEADER, str(ts)),
                (NONCE_HEADER, nonce),
                (KEY_HEADER, self._key_id),
                (SIG_HEADER, base64.b64encode(sig).decode("ascii")),
            ]
        return tuple(md)


class NonceCache:
    """The nonces seen within the freshness window; memory is bounded per device and in total.

    A nonce is kept until its timestamp leaves the window (after which its request is refused as
    stale anyway), so a replay is caught however late it comes. One device may hold at most
    ``per_device`` nonces at once: a device that floods signed calls is refused (``busy``) without
    crowding out the others.
    """

    def __init__(self, window_s: float, capacity: int = 1_000_000, per_device: int = 10_000):
        self.window_s, self.capacity, self.per_device = window_s, capacity, per_device
        self._seen: set[str] = set()
        self._count: dict[str, int] = {}
        self._expiry: list[tuple[float, str, str]] = []

    def add(self, nonce: str, ts_s: float, now: float, device: str = "") -> None:
        """Record ``nonce`` of ``device``.

        Raises:
            RequestRefused: the nonce was seen before (a replay), or the device or the cache is full.
        """
        while self._expiry and self._expiry[0][0] < now:
            _, old, owner = heapq.heappop(self._expiry)
            self._seen.discard(old)
            self._count[owner] -= 1
            if not self._count[owner]:
                del self._count[owner]
        if nonce in self._seen:
            raise RequestRefused("replayed", "replayed request: this nonce was already used")
        if self._count.get(device, 0) >= self.per_device or len(self._seen) >= self.capacity:
            raise RequestRefused("busy", "too many requests in the freshness window: try again later")
        self._seen.add(nonce)
        self._count[device] = self._count.get(device, 0) + 1
        heapq.heappush(self._expiry, (ts_s + self.window_s, nonce, device))


class RequestRefused(AuthError):
    """A call the server refuses to authenticate.

    Attributes:
        reason: a short label for counting (``"replayed"``, ``"stale"``, ``"wrong key"``...).
    """

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def _header(md: dict, name: str) -> str:
    value = md.get(name)
    if value is None:
        raise RequestRefused(
            "unsigned",
            f"unsigned request: header {name!r} is missing (expected {TS_HEADER}, {NONCE_HEADER}, "
            f"{KEY_HEADER}, {SIG_HEADER}; does the device have its signing key?)",
        )
    return value


def check_request(
    md: dict,
    method: str,
    token_sha256: str,
    public: bytes,
    nonces: NonceCache,
    max_skew_s: float,
    now: float | None = None,
) -> None:
    """Check a call's signature headers against the key registered for its token.

    Args:
        md: the call metadata as a dict.
        method: the RPC name the server is serving (``"CheckIn"``, ``"Report"``...).
        token_sha256: the digest of the call's (already known) token.
        public: the raw Ed25519 public key registered for that token.
        nonces: the server's nonce cache.
        max_skew_s: how far the timestamp may be from the server's clock.
        now: the server's clock (tests).

    Raises:
        AuthError: a header is missing or malformed, the timestamp is stale, the key or signature is
            wrong, or the nonce was seen before; the message names which.
    """
    now = time.time() if now is None else now
    ts_raw, nonce = _header(md, TS_HEADER), _header(md, NONCE_HEADER)
    kid, sig_raw = _header(md, KEY_HEADER), _header(md, SIG_HEADER)
    if not (ts_raw.isascii() and ts_raw.isdigit()) or len(ts_raw) > 16:  # str.isdigit alone takes "²"
        raise RequestRefused("malformed", f"malformed {TS_HEADER}: expected milliseconds since the epoch")
    if not _NONCE.fullmatch(nonce):
        raise RequestRefused("malformed", f"malformed {NONCE_HEADER}: expected {2 * NONCE_BYTES} lowercase hex digits")
    ts = int(ts_raw) / 1000
    if abs(now - ts) > max_skew_s:
        raise RequestRefused(
            "stale",
            f"stale timestamp: {now - ts:+.0f} s from the server's clock (at most {max_skew_s:g} s "
            "allowed; is the device's clock right?)",
        )
    if kid != key_id(public):
        raise RequestRefused("wrong key", "wrong key: the request is signed with a key not registered for this token")
    try:
        sig = base64.b64decode(sig_raw, validate=True)
    except ValueError:
        raise RequestRefused("malformed", f"malformed {SIG_HEADER}: expected base64") from None
    if not verify_signature(public, REQUEST_PURPOSE, request_data(method, int(ts_raw), nonce, token_sha256), sig):
        raise RequestRefused(
            "bad signature", f"bad signature: it does not verify for {method} under the key registered for this token"
        )
    nonces.add(nonce, ts, now, token_sha256)
