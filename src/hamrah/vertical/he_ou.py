"""Okamoto-Uchiyama (OU) encryption: vertical LR's faster alternative to Paillier.

Okamoto and Uchiyama 1998, *A new public-key cryptosystem as secure as factoring* (EUROCRYPT '98);
SecretFlow's HEU offers it beside Paillier. The modulus is ``n = p^2 q``; ``g`` is a unit whose power
``g^(p-1) mod p^2`` has order ``p``; ``h = g^n mod n``. A message ``m`` (``|m| < max_int``, far below
``p``) encrypts as ``g^m h^r mod n`` with ``r`` of ``key_bits / 2`` bits (the short-exponent form HEU
and our Paillier use), and decrypts as ``L(c^(p-1) mod p^2) / L(g^(p-1) mod p^2) mod p`` with
``L(x) = (x - 1) / p``. Ciphertexts multiply to add their plaintexts and a power multiplies the
plaintext, as in Paillier, but everything is modulo ``n`` (2,048 bits) instead of ``n^2`` (4,096):
each operation is several times cheaper, and a ciphertext half the size.

Security: semantic security rests on the p-subgroup assumption and breaking the key on factoring
``n = p^2 q`` (2,048 bits, HEU's default size); the short ``r`` adds the assumption DJN's short
Paillier exponent also makes. OU is malleable and not CCA-secure: a decryption of a ciphertext whose
plaintext exceeds ``p`` returns it reduced mod ``p`` and would reveal ``p``. So a key holder that
returns decryptions to another party must refuse every value above what the protocol can produce:
:func:`decrypt` takes that ``bound`` (vertical LR's packed masked gradients: ``2^556`` at 2,048 bits,
against ``p`` of about ``2^682``), so a crafted ciphertext is answered with probability about
``2^-126``, and a refusal ends the protocol.

Keys and ciphertexts travel as the Paillier ones do (:mod:`hamrah.vertical.he`'s ``CipherVector``,
``to_wire`` / ``from_wire``, ``matvec``, ``add`` work unchanged: the key's ``nsq`` attribute is the
ciphertext modulus, here ``n``).
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field

import gmpy2
import numpy as np

from hamrah.core.errors import ProtocolError
from hamrah.vertical.he import CipherVector
from hamrah.vertical.he_keys import check_key_bits, fixed_base_power, fixed_base_table

__all__ = ["PublicKey", "SecretKey", "add_plain", "decrypt", "encrypt", "keygen", "public_from_wire", "public_to_wire"]


@dataclass(frozen=True, eq=False)
class PublicKey:
    """An OU public key ``(n, g, h)`` with fixed-base tables for ``h^r`` and ``g^(+-m)``."""

    n: int
    g: int
    h: int
    nsq: gmpy2.mpz = field(init=False, repr=False)  # the ciphertext modulus (named as Paillier's)
    _tables: tuple = field(init=False, repr=False)

    def __post_init__(self) -> None:
        n = gmpy2.mpz(self.n)
        object.__setattr__(self, "nsq", n)
        object.__setattr__(
            self,
            "_tables",
            (
                fixed_base_table(self.h, n, self.r_bits),
                fixed_base_table(self.g, n, self.plain_bits),
                fixed_base_table(gmpy2.invert(self.g, n), n, self.plain_bits),
            ),
        )

    @property
    def key_bits(self) -> int:
        return self.n.bit_length()

    @property
    def r_bits(self) -> int:
        return self.key_bits // 2

    @property
    def plain_bits(self) -> int:
        """Bits of a plaintext's magnitude: 4 below the public size of ``p`` (``key_bits // 3``)."""
        return self.key_bits // 3 - 4

    @property
    def max_int(self) -> int:
        return 1 << self.plain_bits

    @property
    def fingerprint(self) -> bytes:
        return hashlib.sha256(b"hamrah-ou|%d|%d|%d" % (self.n, self.g, self.h)).digest()[:16]

    def hs_power(self, r: int) -> gmpy2.mpz:
        """Return ``h^r mod n`` (the random factor of an encryption), ``0 <= r < 2^r_bits``."""
        return fixed_base_power(self._tables[0], r, self.nsq)

    def plain_factor(self, v: int) -> gmpy2.mpz:
        """Return ``g^v mod n`` for a signed ``|v| < max_int``.

        Raises:
            ProtocolError: ``v`` is out of range.
        """
        if abs(v) >= self.max_int:
            raise ProtocolError(
                f"a {abs(v).bit_length()}-bit plaintext exceeds the OU key's range (|v| < 2^{self.plain_bits})"
            )
        return fixed_base_power(self._tables[1] if v >= 0 else self._tables[2], abs(v), self.nsq)


@dataclass(frozen=True, eq=False)
class SecretKey:
    """The secret half: ``p`` and ``1 / L(g^(p-1) mod p^2) mod p``."""

    public: PublicKey
    p: gmpy2.mpz = field(repr=False)
    g_inv: gmpy2.mpz = field(repr=False)


def _prime(bits: int, rng: np.random.Generator | None) -> gmpy2.mpz:
    raw = secrets.randbits(bits) if rng is None else int.from_bytes(rng.bytes((bits + 7) // 8), "big") % (1 << bits)
    return gmpy2.next_prime(gmpy2.mpz(raw) | (3 << (bits - 2)))


def keygen(key_bits: int = 2048, rng: np.random.Generator | None = None) -> tuple[PublicKey, SecretKey]:
    """Return a fresh OU key pair (``rng`` only for reproducible test keys; None: the OS CSPRNG).

    Raises:
        ConfigError: ``key_bits`` is not an even integer >= 1024.
    """
    check_key_bits(key_bits)
    pb = key_bits // 3
    while True:
        p, q = _prime(pb, rng), _prime(key_bits - 2 * pb, rng)
        n = p * p * q
        if p != q and n.bit_length() == key_bits and (q - 1) % p and (p - 1) % q:
            break
    psq = p * p
    while True:
        g = gmpy2.mpz(secrets.randbelow(int(n) - 2) + 2 if rng is None else int(rng.integers(2, 2**62)))
        gp = gmpy2.powmod(g, p - 1, psq)
        if gmpy2.gcd(g, n) == 1 and gp != 1 and (gp - 1) // p % p:
            break
    public = PublicKey(int(n), int(g), int(gmpy2.powmod(g, n, n)))
    return public, SecretKey(public, p, gmpy2.invert((gp - 1) // p, p))


def encrypt(public: PublicKey, ints: Sequence[int]) -> CipherVector:
    """Encrypt signed integers ``|v| < public.max_int``.

    Raises:
        ProtocolError: a value out of range.
    """
    nsq = public.nsq
    return CipherVector(
        public,
        tuple(public.plain_factor(int(v)) * public.hs_power(secrets.randbits(public.r_bits)) % nsq for v in ints),
    )


def add_plain(a: CipherVector, ints: Sequence[int]) -> CipherVector:
    """Return the encryption of ``a + ints`` element-wise (or, on random factors ``h^r``, a fresh encryption)."""
    if len(ints) != len(a):
        raise ProtocolError(f"add_plain: expected {len(a)} values, got {len(ints)}")
    nsq = a.public.nsq
    return CipherVector(a.public, tuple(c * a.public.plain_factor(int(v)) % nsq for c, v in zip(a.cts, ints)))


def decrypt(secret: SecretKey, a: CipherVector, signed: bool = True, bound: int = 0) -> list[int]:
    """Return the plaintexts of ``a``: signed (``|v| < max_int``), or (``signed=False``) in ``[0, bound)``.

    Args:
        bound: the largest unsigned value the caller expects, plus one (0: ``max_int``).

    Raises:
        ProtocolError: another key, or a plaintext outside the range (refused, never returned: an
            OU decryption of a value beyond ``p`` would reveal the key).
    """
    if secret.public.fingerprint != a.public.fingerprint:
        raise ProtocolError("decrypt: the ciphertexts were made under another public key")
    p, top, out = secret.p, (bound if bound and not signed else secret.public.max_int), []
    psq = p * p
    for i, c in enumerate(a.cts):
        m = int((gmpy2.powmod(c % psq, p - 1, psq) - 1) // p * secret.g_inv % p)
        if signed and m >= p - top:
            m -= int(p)
        elif m >= top:
            raise ProtocolError(f"decrypt: value {i} is outside the OU key's plaintext range (refused)")
        out.append(m)
    return out


def public_to_wire(public: PublicKey) -> dict:
    """Return the message fields carrying an OU public key."""
    return {"n": (public.n,), "g": (public.g,), "h": (public.h,)}


def public_from_wire(fields: dict, min_bits: int = 1024) -> PublicKey:
    """Rebuild an OU public key from message fields.

    Raises:
        ProtocolError: missing fields, a modulus under ``min_bits`` bits or even, ``g`` or ``h`` not units.
    """
    n, g, h = (fields.get(k) for k in ("n", "g", "h"))
    if not all(isinstance(v, tuple) and len(v) == 1 and isinstance(v[0], int) for v in (n, g, h)):
        raise ProtocolError("OU public key: expected fields 'n', 'g' and 'h', one big int each")
    n, g, h = n[0], g[0], h[0]
    if n.bit_length() < min_bits or n % 2 == 0:
        raise ProtocolError(f"OU public key: expected an odd modulus of at least {min_bits} bits, got {n.bit_length()}")
    if not (1 < g < n and 1 < h < n and gmpy2.gcd(g, n) == 1 and gmpy2.gcd(h, n) == 1):
        raise ProtocolError("OU public key: g and h must be units in [2, n)")
    return PublicKey(n, g, h)
