"""Keys of the vertical Paillier backend: key pairs, the DJN fixed-base table, keys on the wire.

The scheme and its speed-ups are described in :mod:`hamrah.vertical.he`, which re-exports the keys
and key functions; the operations on ciphertexts live there.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, field

import gmpy2
import numpy as np
from phe import paillier

from hamrah.core.errors import ConfigError, ProtocolError
from hamrah.he.paillier import paillier_keygen

WINDOW_BITS = 8


def fixed_base_table(base, mod, bits: int) -> tuple:
    """Fixed-base table of ``base`` modulo ``mod`` for exponents of ``bits`` bits: row ``i`` holds
    ``base^(d * 2^(WINDOW_BITS i))`` for ``d < 2^WINDOW_BITS``."""
    table, base = [], gmpy2.mpz(base)
    for _ in range((bits + WINDOW_BITS - 1) // WINDOW_BITS):
        row = [gmpy2.mpz(1)]
        for _ in range((1 << WINDOW_BITS) - 1):
            row.append(row[-1] * base % mod)
        table.append(tuple(row))
        base = row[-1] * base % mod
    return tuple(table)


def fixed_base_power(table: tuple, e: int, mod) -> gmpy2.mpz:
    """Return ``base^e mod mod`` from ``table`` (:func:`fixed_base_table`; ``e`` within its bits)."""
    acc, mask = gmpy2.mpz(1), (1 << WINDOW_BITS) - 1
    for row in table:
        if e & mask:
            acc = acc * row[e & mask] % mod
        e >>= WINDOW_BITS
    return acc


def random_below(bound: int, rng: np.random.Generator | None) -> int:
    """Return a uniform integer in ``[0, bound)``: from the OS CSPRNG, or from ``rng`` (reproducible test keys)."""
    if rng is None:
        return secrets.randbelow(bound)
    nbytes = (bound.bit_length() + 7) // 8 + 8
    return int.from_bytes(rng.bytes(nbytes), "big") % bound


@dataclass(frozen=True, eq=False)
class PublicKey:
    """A Paillier public key with the DJN base ``hs`` and its fixed-base table.

    Attributes:
        n: the modulus.
        hs: ``h^n mod n^2`` for a random ``h = -x^2 mod n`` (public).
    """

    n: int
    hs: int
    nsq: gmpy2.mpz = field(init=False, repr=False)
    _table: tuple = field(init=False, repr=False)

    def __post_init__(self) -> None:
        nsq = gmpy2.mpz(self.n) ** 2
        object.__setattr__(self, "nsq", nsq)
        object.__setattr__(self, "_table", fixed_base_table(self.hs, nsq, self.r_bits))

    @property
    def key_bits(self) -> int:
        return self.n.bit_length()

    @property
    def r_bits(self) -> int:
        """Bits of the random exponent: half the modulus, as HEU's ZPaillier."""
        return self.n.bit_length() // 2

    @property
    def max_int(self) -> int:
        """The largest magnitude a signed plaintext may have (``n // 3``)."""
        return self.n // 3

    @property
    def fingerprint(self) -> bytes:
        """16 bytes naming this key on the wire."""
        return hashlib.sha256(b"hamrah-paillier|%d|%d" % (self.n, self.hs)).digest()[:16]

    def hs_power(self, r: int) -> gmpy2.mpz:
        """Return ``hs^r mod n^2`` from the fixed-base table (``0 <= r < 2^r_bits``)."""
        return fixed_base_power(self._table, r, self.nsq)


@dataclass(frozen=True, eq=False)
class SecretKey:
    """The secret half: ``phe``'s private key (CRT decryption) and the public key it belongs to."""

    public: PublicKey
    private: paillier.PaillierPrivateKey = field(repr=False)


def keygen(key_bits: int = 2048, rng: np.random.Generator | None = None) -> tuple[PublicKey, SecretKey]:
    """Return a fresh key pair.

    Args:
        key_bits: modulus size: 2048 for real use (about 112-bit security); tests use 1024 for speed.
        rng: ``None`` for the OS CSPRNG (the only secure choice); a Generator for reproducible test keys.

    Raises:
        ConfigError: ``key_bits`` is not an even integer >= 512.
    """
    phe_public, phe_private = paillier_keygen(key_bits, rng)
    n = phe_public.n
    x = random_below(n - 2, rng) + 2
    hs = int(gmpy2.powmod(n - x * x % n, n, gmpy2.mpz(n) ** 2))
    public = PublicKey(n, hs)
    return public, SecretKey(public, phe_private)


def public_to_wire(public: PublicKey) -> dict:
    """Return the message fields carrying a public key."""
    return {"n": (public.n,), "hs": (public.hs,)}


def public_from_wire(fields: dict, min_bits: int = 1024) -> PublicKey:
    """Rebuild a public key from message fields.

    Raises:
        ProtocolError: missing fields, a modulus under ``min_bits`` bits or even, or ``hs`` out of range.
    """
    n, hs = fields.get("n"), fields.get("hs")
    if not (isinstance(n, tuple) and isinstance(hs, tuple) and len(n) == 1 and len(hs) == 1):
        raise ProtocolError("public key: expected fields 'n' and 'hs', one big int each")
    n, hs = n[0], hs[0]
    if n.bit_length() < min_bits or n % 2 == 0:
        raise ProtocolError(
            f"public key: expected an odd modulus of at least {min_bits} bits, got {n.bit_length()} bits"
        )
    if not 1 < hs < n * n or gmpy2.gcd(hs, n) != 1:
        raise ProtocolError("public key: hs must be a unit in [2, n^2)")
    return PublicKey(n, hs)


def check_key_bits(key_bits: int) -> None:
    """Refuse a key size that is not an even integer >= 1024 (1024 only for tests).

    Raises:
        ConfigError: naming the value and what was expected.
    """
    if isinstance(key_bits, bool) or not isinstance(key_bits, int) or key_bits < 1024 or key_bits % 2:
        raise ConfigError(f"key_bits: expected an even integer >= 1024 (2048 for real use), got {key_bits!r}")


__all__ = [
    "WINDOW_BITS",
    "PublicKey",
    "SecretKey",
    "check_key_bits",
    "fixed_base_power",
    "fixed_base_table",
    "keygen",
    "public_from_wire",
    "public_to_wire",
    "random_below",
]
