"""CKKS aggregation of float vectors with TenSEAL (Microsoft SEAL underneath).

Cheon, Kim, Kim, Song 2017, *Homomorphic Encryption for Arithmetic of Approximate Numbers*. A
ciphertext of ring degree ``N`` holds ``N / 2`` real slots; a long vector is split across
``ceil(length / (N/2))`` ciphertexts. Values are scaled by ``2^scale_bits`` and rounded into the
plaintext polynomial; encryption adds small noise, so decryption is approximate.

Parameters (the defaults: ``N = 8192``, ``coeff_mod_bit_sizes = (60, 60)``, ``scale_bits = 40``):
aggregation only adds, so no rescaling level is needed; the ciphertext keeps a single 60-bit data
prime, the second prime is SEAL's key-switching prime. The total of 120 bits is far below the 218
bits that the Homomorphic Encryption Standard allows at ``N = 8192`` for 128-bit security, and SEAL
refuses parameters beyond that bound. A sum stays decodable while ``|sum| * 2^scale_bits`` is below
half the data prime, so ``bound * max_clients < 2^(60 - 40 - 1) = 2^19``. Measured error of one
fresh encryption: a standard deviation of about ``N / 6 * 2^-scale_bits`` per slot (1.2e-9 at the
defaults), with heavier tails than a Gaussian's (kurtosis about 6, as a Laplace distribution's);
:meth:`CKKSConfig.error_bound` allows ``4 * N * sqrt(count) * 2^-scale_bits``, 24 standard deviations of
a sum of ``count`` independent encryptions (docs/he.md, "Precision").
"""

from __future__ import annotations

import hashlib
import math
import struct
import weakref
from dataclasses import dataclass, replace

import numpy as np
import tenseal as ts

from hamrah.core.errors import ConfigError, ProtocolError

# Largest total coefficient modulus (bits) for 128-bit classical security, HE Standard (2018), table 1.
MAX_COEFF_BITS = {1024: 27, 2048: 54, 4096: 109, 8192: 218, 16384: 438, 32768: 881}
_MAGIC, _OLD_MAGIC = b"HCV2", b"HCV1"  # HCV1: the format before the key fingerprint
_HEADER = struct.Struct(">QII8s")  # length, count, number of ciphertexts, key fingerprint
_FINGERPRINTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # context -> fingerprint (35 ms each)


@dataclass(frozen=True)
class CKKSConfig:
    """CKKS parameters for summing vectors with ``|x| <= bound`` from up to ``max_clients`` clients.

    Raises:
        ConfigError: if the parameters are insecure, unsupported, or leave no room for the sum.
    """

    poly_modulus_degree: int = 8192
    coeff_mod_bit_sizes: tuple[int, ...] = (60, 60)
    scale_bits: int = 40
    bound: float = 1.0
    max_clients: int = 100

    def __post_init__(self) -> None:
        n, bits = self.poly_modulus_degree, tuple(self.coeff_mod_bit_sizes)
        if n not in MAX_COEFF_BITS or n < 4096:
            raise ConfigError(f"poly_modulus_degree: expected one of 4096, 8192, 16384, 32768, got {n!r}")
        if len(bits) < 2 or sum(bits) > MAX_COEFF_BITS[n] or any(not 20 <= b <= 60 for b in bits):
            raise ConfigError(
                f"coeff_mod_bit_sizes: expected >= 2 primes of 20..60 bits totalling at most "
                f"{MAX_COEFF_BITS[n]} bits for N={n} (128-bit security), got {bits}"
            )
        if not (isinstance(self.max_clients, int) and self.max_clients >= 1 and self.bound > 0):
            raise ConfigError(
                f"bound, max_clients: expected > 0 and a positive integer, got {self.bound!r}, {self.max_clients!r}"
            )
        room = bits[0] - 1 - self.scale_bits
        if not 20 <= self.scale_bits < bits[0] or math.log2(self.bound * self.max_clients) >= room:
            raise ConfigError(
                f"scale_bits: a sum of {self.max_clients} values of |x| <= {self.bound} at "
                f"2^{self.scale_bits} needs bound * max_clients < 2^(first prime bits - 1 - "
                f"scale_bits) = 2^{room}; lower scale_bits or raise coeff_mod_bit_sizes[0]"
            )

    @property
    def slots(self) -> int:
        """Return the values one ciphertext holds: ``N / 2``."""
        return self.poly_modulus_degree // 2

    def num_ciphertexts(self, length: int) -> int:
        """Return how many ciphertexts a vector of ``length`` values needs."""
        return -(-length // self.slots)

    def error_bound(self, count: int) -> float:
        """Return the documented bound on the absolute error of each value of a sum of ``count`` vectors."""
        return 4.0 * self.poly_modulus_degree * math.sqrt(count) * 2.0**-self.scale_bits


@dataclass(frozen=True)
class CKKSCiphertext:
    """A vector encrypted as CKKS ciphertexts of ``slots`` values each, summing ``count`` clients, under
    the public key of :func:`ckks_fingerprint` ``fingerprint``."""

    vectors: tuple[ts.CKKSVector, ...]
    length: int
    count: int = 1
    fingerprint: bytes = b""


def ckks_fingerprint(context: ts.Context) -> bytes:
    """Return the 8-byte SHA-256 fingerprint of a context's public part (parameters and public key).

    The serialization is deterministic, so a device that parsed the public bytes and the server that sent
    them compute the same fingerprint; a secret context has its public part's. The context's mutable
    ``global_scale`` is left out (a ciphertext's scale is checked on its own, :func:`_parse`). Cached per
    context object.
    """
    fp = _FINGERPRINTS.get(context)
    if fp is None:
        canonical = context.copy()
        canonical.global_scale = 1.0
        fp = _FINGERPRINTS[context] = hashlib.sha256(ckks_public_to_bytes(canonical)).digest()[:8]
    return fp


def ckks_keygen(config: CKKSConfig) -> tuple[ts.Context, ts.Context]:
    """Return ``(public_context, secret_context)``; the public one holds no secret key.

    SEAL draws keys from its own CSPRNG: TenSEAL exposes no seed, so CKKS keys are never reproducible.
    """
    secret = ts.context(
        ts.SCHEME_TYPE.CKKS,
        poly_modulus_degree=config.poly_modulus_degree,
        coeff_mod_bit_sizes=list(config.coeff_mod_bit_sizes),
    )
    secret.global_scale = 2.0**config.scale_bits
    return ckks_public_from_bytes(ckks_public_to_bytes(secret)), secret


def ckks_public_to_bytes(context: ts.Context) -> bytes:
    """Return the public part of a context: parameters and public key (no secret, relin or Galois keys)."""
    return context.serialize(save_public_key=True, save_secret_key=False, save_galois_keys=False, save_relin_keys=False)


def ckks_public_from_bytes(data: bytes) -> ts.Context:
    """Return the public context encoded by :func:`ckks_public_to_bytes`.

    Raises:
        ProtocolError: if ``data`` is not a serialized CKKS context, or it carries a secret key.
    """
    try:
        context = ts.context_from(bytes(data))
    except (ValueError, RuntimeError, TypeError) as exc:
        raise ProtocolError(f"CKKS public context: cannot parse ({exc})") from exc
    if context.is_private():
        raise ProtocolError("CKKS public context: expected no secret key, got a context holding one")
    return context


def ckks_encrypt(public: ts.Context, x: np.ndarray, config: CKKSConfig) -> CKKSCiphertext:
    """Return ``x`` encrypted in ``config.num_ciphertexts(len(x))`` ciphertexts.

    Raises:
        ProtocolError: if ``x`` is not a finite 1-D vector or a value exceeds ``config.bound``.
    """
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 1 or not np.all(np.isfinite(arr)):
        raise ProtocolError(f"vector: expected a finite 1-D array, got shape {arr.shape}")
    over = np.flatnonzero(np.abs(arr) > config.bound)
    if over.size:
        raise ProtocolError(f"vector[{int(over[0])}] = {arr[over[0]]:g} exceeds the CKKS bound {config.bound}")
    k = config.slots
    vectors = tuple(ts.ckks_vector(public, arr[i : i + k]) for i in range(0, arr.size, k))
    return CKKSCiphertext(vectors, arr.size, 1, ckks_fingerprint(public))


def ckks_add(a: CKKSCiphertext, b: CKKSCiphertext, config: CKKSConfig) -> CKKSCiphertext:
    """Return the encryption of ``a + b``, computed with no secret key.

    Raises:
        ProtocolError: if the lengths differ.
        ConfigError: if the sum would exceed ``config.max_clients``.
    """
    if a.length != b.length or len(a.vectors) != len(b.vectors):
        raise ProtocolError(f"ciphertexts: length differs ({a.length} vs {b.length})")
    if a.fingerprint != b.fingerprint:
        raise ProtocolError(
            f"ciphertexts: encrypted under different public keys (fingerprints {a.fingerprint.hex()} "
            f"and {b.fingerprint.hex()})"
        )
    if a.count + b.count > config.max_clients:
        raise ConfigError(
            f"CKKS: a sum of {a.count + b.count} vectors exceeds max_clients={config.max_clients}, "
            f"the count the modulus headroom was checked for"
        )
    return replace(a, vectors=tuple(x + y for x, y in zip(a.vectors, b.vectors)), count=a.count + b.count)


def ckks_scale(c: CKKSCiphertext, k: int, config: CKKSConfig) -> CKKSCiphertext:
    """Return the encryption of ``k * c`` for a positive integer ``k``, by doubling and adding ciphertexts.

    A ciphertext-plaintext product would square the scale and need a rescaling level that the
    aggregation parameters do not have; ``floor(log2 k)`` doublings and at most as many additions
    keep the scale and add no level. The result counts as ``k * count`` summands against
    ``config.max_clients`` (the room for the sum); its error grows like ``k``.

    Raises:
        ConfigError: if ``k`` is not a positive integer or ``k * count`` exceeds ``config.max_clients``.
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ConfigError(f"ckks_scale: expected a positive integer factor, got {k!r}")
    factor = int(k)
    if c.count * factor > config.max_clients:
        raise ConfigError(
            f"CKKS: a weight of {factor} on a sum of {c.count} makes {c.count * factor} summands, more "
            f"than max_clients={config.max_clients}, the count the modulus headroom was checked for"
        )
    out, power, rest = None, list(c.vectors), factor
    while rest:
        if rest & 1:
            out = list(power) if out is None else [x + y for x, y in zip(out, power)]
        rest >>= 1
        if rest:
            power = [x + x for x in power]
    return replace(c, vectors=tuple(out), count=c.count * factor)


def ckks_decrypt(secret: ts.Context, c: CKKSCiphertext) -> np.ndarray:
    """Return the float64 values ``c`` encrypts.

    Raises:
        ProtocolError: if ``secret`` holds no secret key or is not the key ``c`` is under.
    """
    if not isinstance(secret, ts.Context) or not secret.is_private():
        raise ProtocolError("CKKS decrypt: the context holds no secret key (only the key holder can decrypt)")
    if c.fingerprint != ckks_fingerprint(secret):
        raise ProtocolError(
            f"CKKS decrypt: the sum is under public key {c.fingerprint.hex()}, the key holder's is "
            f"{ckks_fingerprint(secret).hex()}"
        )
    sk = secret.secret_key()
    return np.concatenate([np.asarray(v.decrypt(sk), dtype=np.float64) for v in c.vectors])[: c.length]


def ckks_check_sum(values: np.ndarray, count: int, config: CKKSConfig) -> None:
    """Refuse a decrypted sum of total weight ``count`` with a value no such sum of ``|x| <= bound`` holds.

    The limit is ``bound * count`` plus ``4 N count 2^-scale_bits``, room for the encryption error of any
    weighting (a ciphertext doubled and added k times carries k times its error). A ciphertext under
    another key, or crafted, decrypts to noise of the order of ``q / scale`` and above in every slot
    (measured; ``CKKSConfig`` keeps the limit below ``q / (2 scale)``), so such a sum is refused unless
    every one of its slots happens to land inside the limit.

    Raises:
        ProtocolError: a value is not finite or beyond the limit, naming it and the limit.
    """
    limit = config.bound * count + 4.0 * config.poly_modulus_degree * count * 2.0**-config.scale_bits
    bad = np.flatnonzero(~(np.abs(values) <= limit))  # NaN counts as bad
    if bad.size:
        i = int(bad[0])
        raise ProtocolError(
            f"CKKS sum: value {i} decrypts to {values[i]:g} ({bad.size} of {values.size} values out of range); "
            f"expected |value| <= {limit:g} (bound {config.bound:g} x total weight {count}, plus the encryption "
            "error): a report was encrypted under another key, crafted, or beyond the bound"
        )


def ckks_to_bytes(c: CKKSCiphertext) -> bytes:
    """Return ``HCV2 | length | count | number | key fingerprint | (size u32 | SEAL ciphertext)*``."""
    parts = [_MAGIC, _HEADER.pack(c.length, c.count, len(c.vectors), c.fingerprint)]
    for v in c.vectors:
        blob = v.serialize()
        parts += [struct.pack(">I", len(blob)), blob]
    return b"".join(parts)


def ckks_from_bytes(public: ts.Context, data: bytes, config: CKKSConfig) -> CKKSCiphertext:
    """Return the ciphertext encoded by :func:`ckks_to_bytes`, bound to ``public``.

    Raises:
        ProtocolError: if ``data`` is malformed, truncated, inconsistent with ``config``, or encrypted under
            another public key (its fingerprint differs from ``public``'s: a device with a stale key).
    """
    data = bytes(data)
    pos = len(_MAGIC) + _HEADER.size
    if data[:4] == _OLD_MAGIC:
        raise ProtocolError(
            f"CKKS vector: format {_OLD_MAGIC!r} carries no key fingerprint; expected {_MAGIC!r} (update the device)"
        )
    if data[:4] != _MAGIC or len(data) < pos:
        raise ProtocolError(f"CKKS vector: expected bytes starting with {_MAGIC!r}, got {data[:4]!r}")
    length, count, num, fp = _HEADER.unpack(data[4:pos])
    if fp != ckks_fingerprint(public):
        raise ProtocolError(
            f"CKKS vector: encrypted under public key {fp.hex()}, expected this round's key "
            f"{ckks_fingerprint(public).hex()} (a stale or wrong public key)"
        )
    if num != config.num_ciphertexts(length) or not 1 <= count <= config.max_clients:
        raise ProtocolError(
            f"CKKS vector: {num} ciphertexts and count {count} do not fit {length} values "
            f"and max_clients={config.max_clients}"
        )
    vectors = []
    for i in range(num):
        if len(data) < pos + 4:
            raise ProtocolError(f"CKKS vector: truncated before ciphertext {i}")
        (size,) = struct.unpack(">I", data[pos : pos + 4])
        blob, pos = data[pos + 4 : pos + 4 + size], pos + 4 + size
        vectors.append(_parse(public, blob, i, min(config.slots, length - i * config.slots), config))
    if pos != len(data):
        raise ProtocolError(f"CKKS vector: {len(data) - pos} bytes left over after {num} ciphertexts")
    return CKKSCiphertext(tuple(vectors), length, count, fp)


def _parse(public: ts.Context, blob: bytes, index: int, size: int, config: CKKSConfig) -> ts.CKKSVector:
    """Parse one SEAL ciphertext and check it can be added to a fresh one: its slot count, its scale
    (a sum of ciphertexts at different scales fails with "scale mismatch"), its polynomial count and its
    level (a fresh encryption: two polynomials over the data primes)."""
    try:
        vec = ts.ckks_vector_from(public, blob)
        (seal,) = vec.ciphertext()
        scale, polys, primes = seal.scale, seal.size(), seal.coeff_modulus_size()
    except (ValueError, RuntimeError, TypeError) as exc:
        raise ProtocolError(f"CKKS vector: ciphertext {index} cannot be parsed ({exc})") from exc
    if vec.size() != size:
        raise ProtocolError(f"CKKS vector: ciphertext {index} holds {vec.size()} values, expected {size}")
    want_primes = len(config.coeff_mod_bit_sizes) - 1
    if scale != 2.0**config.scale_bits or polys != 2 or primes != want_primes:
        got = f"2^{math.log2(scale):g}" if scale > 0 and math.isfinite(scale) else repr(scale)
        raise ProtocolError(
            f"CKKS vector: ciphertext {index} has scale {got}, {polys} polynomials and {primes} primes; "
            f"expected a fresh encryption: scale 2^{config.scale_bits}, 2 polynomials, {want_primes} data primes"
        )
    return vec
