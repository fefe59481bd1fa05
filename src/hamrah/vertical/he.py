"""The one Paillier backend of vertical FL: keys, integer vectors, and the few operations protocols need.

Paillier 1999 (*Public-Key Cryptosystems Based on Composite Degree Residuosity Classes*), on
``phe``'s keys and CRT decryption (:mod:`hamrah.he.paillier`) and ``gmpy2`` arithmetic, with two
speed-ups measured in ``benchmarks/bench_paillier_libs.py`` (``docs/vertical.md``):

- **Encryption** is ``(1 + m n) * hs^r mod n^2`` with ``hs = h^n`` for a random square ``h`` and a
  short exponent ``r`` of ``key_bits / 2`` bits (Damgard, Jurik and Nielsen 2010, *A generalization
  of Paillier's public-key system*, section 4.2; SecretFlow HEU's ``ZPaillier`` does the same), and
  ``hs^r`` comes from a fixed-base table of ``hs^(d * 2^(8i))``: 128 modular multiplications instead
  of a 2048-bit exponentiation ``r^n`` at 2048-bit keys.
- **Plaintext-matrix times ciphertext-vector** (``X^T [[d]]``, every vertical LR gradient) uses the
  bucket method of multi-exponentiation (Pippenger 1980) instead of one exponentiation per entry.

Values are signed integers ``|v| <= n // 3`` (negatives as ``n - |v|``; decryption refuses the gap,
which catches overflow). Fixed-point scaling is the caller's: :func:`encode` / :func:`decode`. To pack
several values in one plaintext, form the integer yourself (``a + b * 2^k``) and keep it below
``public.max_int``.

Who sees what: a :class:`CipherVector` reveals its length only; :func:`to_wire` carries the
ciphertexts and a fingerprint of the public key, so a vector under a wrong key is refused by name;
:func:`from_wire` checks the count and that every ciphertext lies in ``[1, n^2)``.

The keys (:class:`PublicKey`, :class:`SecretKey`, :func:`keygen`, keys on the wire) live in
:mod:`hamrah.vertical.he_keys` and are re-exported here; this module holds the ciphertext vectors
and their operations.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import gmpy2
import numpy as np

from hamrah.core.errors import ProtocolError
from hamrah.he.encoding import FixedPoint
from hamrah.vertical.he_keys import (
    PublicKey,
    SecretKey,
    fixed_base_table,
    keygen,
    public_from_wire,
    public_to_wire,
    random_below,
)
from hamrah.vertical.he_keys import check_key_bits as check_key_bits  # re-exported, not in __all__

__all__ = [
    "CipherVector",
    "KeyHolderEncryptor",
    "PublicKey",
    "SecretKey",
    "add",
    "add_plain",
    "decode",
    "decrypt",
    "encode",
    "encrypt",
    "from_wire",
    "keygen",
    "matvec",
    "mul_plain",
    "public_from_wire",
    "public_to_wire",
    "sum_all",
    "to_wire",
]


@dataclass(frozen=True, eq=False)
class CipherVector:
    """Encrypted signed integers under ``public``, one per ciphertext."""

    public: PublicKey
    cts: tuple = field(repr=False)

    def __len__(self) -> int:
        return len(self.cts)


def _plain(public: PublicKey, v: int) -> int:
    if abs(v) > public.max_int:
        raise ProtocolError(f"a {abs(v).bit_length()}-bit plaintext exceeds the key's range (|v| <= n // 3)")
    return v % public.n


def encrypt(public: PublicKey, ints: Sequence[int], rng: np.random.Generator | None = None) -> CipherVector:
    """Encrypt signed integers.

    Raises:
        ProtocolError: a value exceeds ``public.max_int``.
    """
    n, nsq, bound = public.n, public.nsq, 1 << public.r_bits
    out = []
    for v in ints:
        m = _plain(public, int(v))
        out.append((1 + m * n) % nsq * public.hs_power(random_below(bound, rng)) % nsq)
    return CipherVector(public, tuple(out))


class KeyHolderEncryptor:
    """Encryption by the holder of the secret key, about twice as fast as :func:`encrypt`.

    The same ciphertexts as :func:`encrypt` (``(1 + m n) * hs^r mod n^2``, ``r`` of ``r_bits`` bits),
    computed modulo ``p^2`` and ``q^2`` from fixed-base tables of half the width and joined by the
    Chinese remainder theorem. Only the key holder knows ``p`` and ``q``: SecureBoost's guest uses
    it to encrypt gradients.

    Args:
        secret: the secret key.
    """

    def __init__(self, secret: SecretKey):
        self.public = secret.public
        p, q = gmpy2.mpz(secret.private.p), gmpy2.mpz(secret.private.q)
        self._mods = (p * p, q * q)
        self._tables = tuple(fixed_base_table(gmpy2.mpz(self.public.hs) % m, m, self.public.r_bits) for m in self._mods)
        self._inv = gmpy2.invert(self._mods[0], self._mods[1])

    def _power(self, which: int, digits: bytes):
        acc, mod = gmpy2.mpz(1), self._mods[which]
        for row, d in zip(self._tables[which], digits):  # WINDOW_BITS = 8: one byte per window
            if d:
                acc = acc * row[d] % mod
        return acc

    def obfuscator(self, rng: np.random.Generator | None = None) -> gmpy2.mpz:
        """Return ``hs^r mod n^2`` for a fresh random ``r``: the random factor of one encryption (by CRT)."""
        r = random_below(1 << self.public.r_bits, rng).to_bytes(len(self._tables[0]), "little")
        cp, cq = self._power(0, r), self._power(1, r)
        return cp + self._mods[0] * ((cq - cp) * self._inv % self._mods[1])

    def encrypt(self, ints: Sequence[int], rng: np.random.Generator | None = None) -> CipherVector:
        """Encrypt signed integers (as :func:`encrypt`).

        Raises:
            ProtocolError: a value exceeds ``public.max_int``.
        """
        return add_plain(CipherVector(self.public, tuple(self.obfuscator(rng) for _ in ints)), ints)


def _same(a: CipherVector, b: CipherVector) -> None:
    if a.public is not b.public and a.public.fingerprint != b.public.fingerprint:
        raise ProtocolError("ciphertexts: encrypted under different public keys")
    if len(a) != len(b):
        raise ProtocolError(f"ciphertexts: lengths differ ({len(a)} vs {len(b)})")


def add(a: CipherVector, b: CipherVector) -> CipherVector:
    """Return the encryption of ``a + b`` element-wise."""
    _same(a, b)
    nsq = a.public.nsq
    return CipherVector(a.public, tuple(x * y % nsq for x, y in zip(a.cts, b.cts)))


def add_plain(a: CipherVector, ints: Sequence[int]) -> CipherVector:
    """Return the encryption of ``a + ints`` element-wise (no randomness added).

    Raises:
        ProtocolError: a length mismatch or a value out of range.
    """
    if len(ints) != len(a):
        raise ProtocolError(f"add_plain: expected {len(a)} values, got {len(ints)}")
    n, nsq = a.public.n, a.public.nsq
    return CipherVector(
        a.public, tuple(c * ((1 + _plain(a.public, int(v)) * n) % nsq) % nsq for c, v in zip(a.cts, ints))
    )


def _power(c, k: int, nsq):
    return gmpy2.powmod(gmpy2.invert(c, nsq), -k, nsq) if k < 0 else gmpy2.powmod(c, k, nsq)


def mul_plain(a: CipherVector, ints: Sequence[int] | int) -> CipherVector:
    """Return the encryption of ``a * k`` element-wise (``ints`` a sequence, or one int for all)."""
    ks = [int(ints)] * len(a) if isinstance(ints, (int, np.integer)) else [int(k) for k in ints]
    if len(ks) != len(a):
        raise ProtocolError(f"mul_plain: expected {len(a)} factors, got {len(ks)}")
    return CipherVector(a.public, tuple(_power(c, k, a.public.nsq) for c, k in zip(a.cts, ks)))


def sum_all(a: CipherVector) -> CipherVector:
    """Return the encryption of the sum of ``a``'s values, as a vector of length 1."""
    acc, nsq = gmpy2.mpz(1), a.public.nsq
    for c in a.cts:
        acc = acc * c % nsq
    return CipherVector(a.public, (acc,))


def _multiexp(bases: Sequence, exps: Sequence[int], nsq, window: int = 0):
    """Return ``prod bases[i]^exps[i] mod nsq`` for non-negative exps (Pippenger's bucket method).

    ``window`` 0 picks the bucket width that minimises ``ceil(bits / w) * (len(bases) + 2^(w+1))``
    multiplications (4 bits for a few dozen bases, 6 for a thousand: 1.4x faster there).
    """
    top = max(exps, default=0).bit_length()
    window = window or min(range(2, 11), key=lambda w: -(-top // w) * (len(bases) + (2 << w)))
    acc, mask = gmpy2.mpz(1), (1 << window) - 1
    for shift in range(((top + window - 1) // window - 1) * window, -1, -window):
        for _ in range(window):
            acc = acc * acc % nsq
        buckets = [None] * (1 << window)
        for b, e in zip(bases, exps):
            d = (e >> shift) & mask
            if d:
                buckets[d] = b if buckets[d] is None else buckets[d] * b % nsq
        running, total = gmpy2.mpz(1), gmpy2.mpz(1)
        for d in range(mask, 0, -1):
            if buckets[d] is not None:
                running = running * buckets[d] % nsq
            total = total * running % nsq
        acc = acc * total % nsq
    return acc


def matvec(matrix: np.ndarray, a: CipherVector) -> CipherVector:
    """Return the encryption of ``matrix @ a`` for a signed integer ``matrix`` of shape ``(rows, len(a))``.

    Vertical LR's encrypted gradient ``X^T [[d]]`` is ``matvec(X_int.T, d)``.

    Raises:
        ProtocolError: ``matrix`` has the wrong shape.
    """
    m = np.asarray(matrix)
    if m.ndim != 2 or m.shape[1] != len(a):
        raise ProtocolError(f"matvec: expected a matrix of shape (rows, {len(a)}), got {m.shape}")
    nsq = a.public.nsq
    inverses = [gmpy2.invert(c, nsq) for c in a.cts] if (m < 0).any() else None
    out = []
    for row in m.tolist():
        pos = [(c, k) for c, k in zip(a.cts, row) if k > 0]
        neg = [(ci, -k) for ci, k in zip(inverses or (), row) if k < 0]
        both = pos + neg
        out.append(_multiexp([b for b, _ in both], [k for _, k in both], nsq))
    return CipherVector(a.public, tuple(out))


def decrypt(secret: SecretKey, a: CipherVector, signed: bool = True) -> list[int]:
    """Return the signed integers ``a`` encrypts (``signed=False``: the residues in ``[0, n)``, for masked values).

    Raises:
        ProtocolError: the vector is under another key, or a value overflowed ``n // 3``.
    """
    if secret.public.fingerprint != a.public.fingerprint:
        raise ProtocolError("decrypt: the ciphertexts were made under another public key")
    n, top, out = secret.public.n, secret.public.max_int, []
    for i, c in enumerate(a.cts):
        m = int(secret.private.raw_decrypt(int(c)))
        if not signed:
            out.append(m)
            continue
        if top < m < n - top:
            raise ProtocolError(f"decrypt: value {i} overflowed the key's signed range (|v| <= n // 3)")
        out.append(m - n if m >= n - top else m)
    return out


def encode(x: np.ndarray | Sequence[float], precision_bits: int) -> list[int]:
    """Return ``round(x * 2^precision_bits)`` as Python ints (see :class:`hamrah.he.encoding.FixedPoint`)."""
    return FixedPoint(precision_bits).encode(np.ravel(np.asarray(x, dtype=np.float64)))


def decode(ints: Sequence[int], scale_bits: int) -> np.ndarray:
    """Return ``ints / 2^scale_bits`` as float64."""
    return np.array([v / (1 << scale_bits) for v in ints], dtype=np.float64)


def to_wire(a: CipherVector) -> dict:
    """Return the message fields carrying ``a`` (ciphertexts as big ints, the key's fingerprint)."""
    return {"ct": tuple(int(c) for c in a.cts), "key": a.public.fingerprint}


def from_wire(public: PublicKey, fields: dict, expected_len: int, what: str = "ciphertexts") -> CipherVector:
    """Rebuild a :class:`CipherVector` from message fields, checking key, count and range.

    Args:
        public: the key the sender must have used.
        fields: the received message (``ct`` and ``key``).
        expected_len: how many ciphertexts the protocol expects here.
        what: the name used in errors.

    Raises:
        ProtocolError: missing fields, another key, the wrong count, or a value outside ``[1, n^2)``.
    """
    cts, key = fields.get("ct"), fields.get("key")
    if not isinstance(cts, tuple) or not isinstance(key, bytes):
        raise ProtocolError(f"{what}: expected fields 'ct' (big ints) and 'key' (bytes)")
    if key != public.fingerprint:
        raise ProtocolError(
            f"{what}: made under another public key (fingerprint {key.hex()}, expected {public.fingerprint.hex()})"
        )
    if len(cts) != expected_len:
        raise ProtocolError(f"{what}: expected {expected_len} ciphertexts, got {len(cts)}")
    nsq = public.nsq
    for i, c in enumerate(cts):
        if not 0 < c < nsq:
            raise ProtocolError(f"{what}[{i}]: not a ciphertext (expected a value in [1, n^2))")
    return CipherVector(public, tuple(gmpy2.mpz(c) for c in cts))
