"""Paillier encryption of float vectors: encrypt, add, multiply by plaintexts, decrypt.

Paillier 1999, *Public-Key Cryptosystems Based on Composite Degree Residuosity Classes*. ``phe``
(python-paillier, on gmpy2) supplies the keys, raw encryption and CRT decryption. The vector layer
is ours: ``phe``'s ``EncodedNumber`` picks a base-16 exponent per value, and adding two numbers of
different exponents costs a modular exponentiation; a whole vector at one binary fixed-point scale
makes every addition one modular multiplication, and lets several values share one plaintext
(:class:`~hamrah.he.encoding.Packing`).

Two shapes of encrypted vector:

- unpacked (``packing is None``): one signed value per ciphertext, modulo ``n`` (negatives are
  ``n - |v|``); supports ``add``, ``add_plain``, ``mul_plain``, ``dot_plain``, ``matvec_plain``: what
  vertical FL needs for encrypted gradients. Multiplying by a fixed-point plaintext adds its
  ``precision_bits`` to the vector's ``scale_bits``.
- packed: ``Packing.slots`` non-negative values per ciphertext; supports ``add`` of up to
  ``max_clients`` vectors: what horizontal aggregation needs.

Randomness: ``rng=None`` draws keys and encryption nonces from the operating system's CSPRNG (the
default, and the only secure choice). A numpy ``Generator`` makes keys and ciphertexts reproducible
for tests and simulations; numpy's PCG64 is not a cryptographic generator.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import reduce

import gmpy2
import numpy as np
from phe import paillier

from hamrah.core.errors import ConfigError, ProtocolError
from hamrah.he.encoding import FixedPoint, Packing

PublicKey = paillier.PaillierPublicKey
PrivateKey = paillier.PaillierPrivateKey

MIN_KEY_BITS = 512


@dataclass(frozen=True)
class EncryptedVector:
    """A vector of Paillier ciphertexts and what is needed to decode it.

    Attributes:
        public_key: the key it was encrypted under (holds ``n`` only).
        ciphertexts: integers in ``[1, n^2)``.
        length: number of float values the vector decodes to.
        scale_bits: the fixed-point scale: values are ``plaintext / 2^scale_bits``.
        packing: the slot layout, or ``None`` for one value per ciphertext.
        count: number of client vectors summed into it.
    """

    public_key: PublicKey
    ciphertexts: tuple[int, ...]
    length: int
    scale_bits: int
    packing: Packing | None = None
    count: int = 1


def _random_int(rng: np.random.Generator, bits: int) -> int:
    return int.from_bytes(rng.bytes((bits + 7) // 8), "big") >> (-bits % 8)


def _prime(rng: np.random.Generator, bits: int) -> int:
    return int(gmpy2.next_prime(_random_int(rng, bits) | (1 << (bits - 1))))


def paillier_keygen(key_bits: int = 2048, rng: np.random.Generator | None = None) -> tuple[PublicKey, PrivateKey]:
    """Return a Paillier key pair whose modulus ``n`` has exactly ``key_bits`` bits.

    Args:
        key_bits: modulus size; 2048 or more for real use (about 112-bit security), at least 512.
        rng: ``None`` for the OS CSPRNG; a Generator for reproducible, insecure test keys.

    Raises:
        ConfigError: if ``key_bits`` is not an even integer >= 512.
    """
    if isinstance(key_bits, bool) or not isinstance(key_bits, int) or key_bits < MIN_KEY_BITS or key_bits % 2:
        raise ConfigError(f"key_bits: expected an even integer >= {MIN_KEY_BITS}, got {key_bits!r}")
    if rng is None:
        return paillier.generate_paillier_keypair(n_length=key_bits)
    while True:
        p, q = _prime(rng, key_bits // 2), _prime(rng, key_bits // 2)
        if p != q and (p * q).bit_length() == key_bits:
            public = PublicKey(p * q)
            return public, PrivateKey(public, p, q)


def _nonce(public_key: PublicKey, rng: np.random.Generator | None) -> int | None:
    if rng is None:
        return None  # phe draws r from random.SystemRandom
    return _random_int(rng, public_key.n.bit_length() + 64) % (public_key.n - 1) + 1


def _encrypt_ints(public_key: PublicKey, plaintexts: Sequence[int], rng: np.random.Generator | None) -> tuple[int, ...]:
    return tuple(int(public_key.raw_encrypt(m, _nonce(public_key, rng))) for m in plaintexts)


def _signed_plaintexts(public_key: PublicKey, ints: Sequence[int]) -> list[int]:
    for i, v in enumerate(ints):
        if abs(v) > public_key.max_int:
            raise ProtocolError(f"vector[{i}]: encoding {v} exceeds the key's max_int (n // 3)")
    return [v % public_key.n for v in ints]


def encrypt_vector(
    public_key: PublicKey,
    x: np.ndarray | Sequence[float],
    precision_bits: int = 24,
    rng: np.random.Generator | None = None,
) -> EncryptedVector:
    """Return ``x`` encrypted one value per ciphertext at fixed-point scale ``2^precision_bits``.

    Raises:
        ProtocolError: if ``x`` is not a finite 1-D vector or a value is too large for the key.
    """
    ints = FixedPoint(precision_bits).encode(x)
    return EncryptedVector(
        public_key, _encrypt_ints(public_key, _signed_plaintexts(public_key, ints), rng), len(ints), precision_bits
    )


def encrypt_packed(
    public_key: PublicKey, x: np.ndarray | Sequence[float], packing: Packing, rng: np.random.Generator | None = None
) -> EncryptedVector:
    """Return ``x`` packed ``packing.slots`` values per ciphertext and encrypted.

    Raises:
        ConfigError: if the key is smaller than ``packing.key_bits``.
        ProtocolError: if ``x`` is not a finite 1-D vector or a value exceeds ``packing.bound``.
    """
    if public_key.n.bit_length() < packing.key_bits:
        raise ConfigError(f"packing: sized for a {packing.key_bits}-bit key, got a {public_key.n.bit_length()}-bit key")
    plaintexts = packing.pack(x)
    return EncryptedVector(
        public_key, _encrypt_ints(public_key, plaintexts, rng), len(np.asarray(x)), packing.precision_bits, packing
    )


def _check_compatible(a: EncryptedVector, b: EncryptedVector) -> None:
    if a.public_key.n != b.public_key.n:
        raise ProtocolError("ciphertexts: encrypted under different public keys")
    for field in ("length", "scale_bits", "packing"):
        if getattr(a, field) != getattr(b, field):
            raise ProtocolError(f"ciphertexts: {field} differs ({getattr(a, field)} vs {getattr(b, field)})")


def add(a: EncryptedVector, b: EncryptedVector) -> EncryptedVector:
    """Return the encryption of ``a + b``, computed without any secret key.

    Raises:
        ProtocolError: if the vectors differ in key, length, scale or packing.
        ConfigError: if a packed sum would exceed ``packing.max_clients``.
    """
    _check_compatible(a, b)
    if a.packing is not None:
        a.packing.check_clients(a.count + b.count)
    nsq = gmpy2.mpz(a.public_key.nsquare)
    out = tuple(int(gmpy2.mpz(x) * y % nsq) for x, y in zip(a.ciphertexts, b.ciphertexts))
    return replace(a, ciphertexts=out, count=a.count + b.count)


def sum_vectors(vectors: Sequence[EncryptedVector]) -> EncryptedVector:
    """Return the encryption of the sum of ``vectors``.

    Raises:
        ProtocolError: if ``vectors`` is empty or they are incompatible.
        ConfigError: if a packed sum would exceed ``packing.max_clients``.
    """
    if not vectors:
        raise ProtocolError("vectors: expected at least one encrypted vector, got none")
    return reduce(add, vectors)


def scale_packed(a: EncryptedVector, k: int) -> EncryptedVector:
    """Return the encryption of ``k * a`` for a positive integer ``k`` (``c^k mod n^2``), packed or not.

    Every slot of a packed vector is multiplied by ``k`` (its offset too), so the result counts as ``k``
    summands against ``packing.max_clients``: a server can weight a client's vector by its example
    count ``n_k`` without the secret key (the weighted sum of FedAvg, McMahan et al. 2017).

    Raises:
        ConfigError: if ``k`` is not a positive integer, or the scaled count exceeds ``packing.max_clients``.
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ConfigError(f"scale_packed: expected a positive integer factor, got {k!r}")
    k = int(k)
    if a.packing is not None:
        a.packing.check_clients(a.count * k)
    if k == 1:
        return a
    nsq = gmpy2.mpz(a.public_key.nsquare)
    out = tuple(int(gmpy2.powmod(gmpy2.mpz(c), k, nsq)) for c in a.ciphertexts)
    return replace(a, ciphertexts=out, count=a.count * k)


def _require_unpacked(a: EncryptedVector, op: str) -> None:
    if a.packing is not None:
        raise ProtocolError(f"{op}: needs one value per ciphertext; got a packed vector (only add is defined)")


def _scalar_power(c: int, k: int, nsq: gmpy2.mpz) -> gmpy2.mpz:
    """Return the encryption of ``k * m`` from ``c = E(m)``: ``c^k``, inverting first for ``k < 0``."""
    base = gmpy2.invert(gmpy2.mpz(c), nsq) if k < 0 else gmpy2.mpz(c)
    return gmpy2.powmod(base, abs(k), nsq)


def add_plain(a: EncryptedVector, x: np.ndarray | Sequence[float]) -> EncryptedVector:
    """Return the encryption of ``a + x`` for a plaintext vector ``x`` of the same length.

    Raises:
        ProtocolError: if ``a`` is packed or ``x`` has the wrong length.
    """
    _require_unpacked(a, "add_plain")
    xs = np.asarray(x, dtype=np.float64)
    if xs.shape != (a.length,) or not np.all(np.isfinite(xs)):
        raise ProtocolError(f"add_plain: expected {a.length} finite values, got shape {xs.shape}")
    ints = [round(float(v) * 2.0**a.scale_bits) for v in xs]  # exact: a power-of-two scaling
    n, nsq = a.public_key.n, gmpy2.mpz(a.public_key.nsquare)
    plains = _signed_plaintexts(a.public_key, ints)
    return replace(a, ciphertexts=tuple(int(gmpy2.mpz(c) * (n * m + 1) % nsq) for c, m in zip(a.ciphertexts, plains)))


def mul_plain(a: EncryptedVector, w: float | np.ndarray | Sequence[float], precision_bits: int = 24) -> EncryptedVector:
    """Return the encryption of ``a * w`` (a scalar, or element-wise for a vector of ``a.length``).

    The result's ``scale_bits`` is ``a.scale_bits + precision_bits``.

    Raises:
        ProtocolError: if ``a`` is packed or ``w`` has the wrong length.
    """
    _require_unpacked(a, "mul_plain")
    ws = np.broadcast_to(np.asarray(w, dtype=np.float64), (a.length,)) if np.ndim(w) == 0 else np.asarray(w)
    if ws.shape != (a.length,):
        raise ProtocolError(f"mul_plain: expected a scalar or {a.length} values, got shape {ws.shape}")
    ks = FixedPoint(precision_bits).encode(ws)
    nsq = gmpy2.mpz(a.public_key.nsquare)
    out = tuple(int(_scalar_power(c, k, nsq)) for c, k in zip(a.ciphertexts, ks))
    return replace(a, ciphertexts=out, scale_bits=a.scale_bits + precision_bits)


def dot_plain(a: EncryptedVector, w: np.ndarray | Sequence[float], precision_bits: int = 24) -> EncryptedVector:
    """Return the encryption of the inner product ``sum_i a_i * w_i`` as a vector of length 1.

    Raises:
        ProtocolError: if ``a`` is packed or ``w`` has the wrong length.
    """
    prod = mul_plain(a, w, precision_bits)
    nsq = gmpy2.mpz(a.public_key.nsquare)
    total = reduce(lambda x, y: x * y % nsq, (gmpy2.mpz(c) for c in prod.ciphertexts), gmpy2.mpz(1))
    return replace(prod, ciphertexts=(int(total),), length=1)


def matvec_plain(matrix: np.ndarray, a: EncryptedVector, precision_bits: int = 24) -> EncryptedVector:
    """Return the encryption of ``matrix @ a`` for a plaintext ``matrix`` of shape ``(rows, a.length)``.

    In vertical logistic regression (Hardy et al. 2017) this is a party's encrypted gradient
    ``X_B^T [[d]]`` from the encrypted residuals ``[[d]]`` and its own features ``X_B``.

    Raises:
        ProtocolError: if ``a`` is packed or ``matrix`` has the wrong shape.
    """
    m = np.asarray(matrix, dtype=np.float64)
    if m.ndim != 2 or m.shape[1] != a.length:
        raise ProtocolError(f"matvec_plain: expected a matrix of shape (rows, {a.length}), got {m.shape}")
    rows = [dot_plain(a, row, precision_bits) for row in m]
    return replace(
        rows[0] if rows else a,
        ciphertexts=tuple(r.ciphertexts[0] for r in rows),
        length=len(rows),
        scale_bits=a.scale_bits + precision_bits,
    )


def decrypt_ints(private_key: PrivateKey, a: EncryptedVector) -> list[int]:
    """Return the exact fixed-point integers ``a`` encrypts (signed; packed: the per-value sums).

    Raises:
        ProtocolError: if the key does not match or a value overflowed the key's range.
        ConfigError: if a packed vector sums more clients than its headroom allows.
    """
    if private_key.public_key.n != a.public_key.n:
        raise ProtocolError("decrypt: the private key does not belong to the vector's public key")
    plains = [int(private_key.raw_decrypt(c)) for c in a.ciphertexts]
    if a.packing is not None:
        return a.packing.unpack_ints(plains, a.length, a.count)
    return _to_signed(a.public_key, plains)


def decrypt_vector(private_key: PrivateKey, a: EncryptedVector) -> np.ndarray:
    """Return the float64 values ``a`` encrypts (for a packed vector, the sum of its ``count`` clients).

    Raises:
        ProtocolError: if the key does not match or a value overflowed the key's range.
        ConfigError: if a packed vector sums more clients than its headroom allows.
    """
    denominator = 1 << a.scale_bits
    return np.array([v / denominator for v in decrypt_ints(private_key, a)], dtype=np.float64)


def _to_signed(public_key: PublicKey, plains: Sequence[int]) -> list[int]:
    n, top = public_key.n, public_key.max_int
    out = []
    for i, m in enumerate(plains):
        if top < m < n - top:
            raise ProtocolError(f"decrypt: value {i} overflowed the key's signed range (|v| <= n // 3)")
        out.append(m - n if m >= n - top else m)
    return out
