"""The arithmetic of vertical LR behind one interface: plaintext floats or ciphertexts (Paillier or OU).

Both protocols (``lr_coordinated``, ``lr_sshe``) send the same messages in either mode; :class:`PlainOps`
is the plaintext baseline of the HE-overhead measurement, :class:`PaillierOps` the encrypted mode
(fixed point at ``precision_bits``, packed and masked gradients) under a Paillier (:mod:`he`) or OU
(:mod:`he_ou`) key. Encryption draws its random factors (``hs^r``, OU's ``h^r``) from an
:class:`ObfuscatorPool` filled ahead of time (the offline phase: the exponentiation is the dear part
of an encryption), so the online cost of an encryption is a multiplication or two.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

import gmpy2
import numpy as np

from hamrah.core.errors import ProtocolError
from hamrah.vertical import he, he_ou

SCHEMES = ("paillier", "ou")

# Masked gradients travel packed: a value of up to VALUE_BITS bits (fixed point at 2 * precision_bits:
# |X^T d| < 2^(VALUE_BITS - 2 * precision_bits), far beyond any finite training) plus its mask per slot.
VALUE_BITS = 96
SLOT_BITS = VALUE_BITS + 43


def _scheme(public):
    """The module that implements ``public``'s scheme (:mod:`he` for Paillier, :mod:`he_ou` for OU)."""
    return he_ou if isinstance(public, he_ou.PublicKey) else he


def keygen(scheme: str, key_bits: int) -> tuple:
    """Return a fresh key pair of ``scheme`` (``paillier`` or ``ou``)."""
    return (he_ou if scheme == "ou" else he).keygen(key_bits)


def public_to_wire(public) -> dict:
    """Return the message fields of a public key of either scheme."""
    return _scheme(public).public_to_wire(public)


def public_from_wire(scheme: str, fields: dict, min_bits: int):
    """Rebuild the peer's public key of the agreed ``scheme``.

    Raises:
        ProtocolError: a malformed key, or a key of the other scheme.
    """
    return (he_ou if scheme == "ou" else he).public_from_wire(fields, min_bits=min_bits)


class ObfuscatorPool:
    """Random factors ``hs^r mod n^2`` of Paillier encryptions (OU: ``h^r mod n``), computed ahead.

    An encryption is ``(1 + m n) * hs^r mod n^2`` (:mod:`hamrah.vertical.he`; OU: ``g^m h^r mod n``); the exponentiation
    ``hs^r`` does not depend on ``m``, so it can be computed before the message is known (the offline
    phase) and the online encryption is two multiplications. Each factor is used once and then dropped
    (a reused factor would let anyone divide two ciphertexts and test their plaintexts' difference).
    A Paillier key holder computes them by CRT (:meth:`he.KeyHolderEncryptor.obfuscator`, faster).

    Attributes:
        cpu_s: CPU-seconds spent in :meth:`fill` (the offline cost).
    """

    def __init__(self, public, secret=None):
        self.public, self.cpu_s, self._items = public, 0.0, []
        self._fast = he.KeyHolderEncryptor(secret) if isinstance(secret, he.SecretKey) else None

    def _one(self) -> gmpy2.mpz:
        return self._fast.obfuscator() if self._fast else self.public.hs_power(secrets.randbits(self.public.r_bits))

    def fill(self, count: int) -> float:
        """Make sure ``count`` factors are ready; return the CPU-seconds it took."""
        start = time.thread_time()
        self._items.extend(self._one() for _ in range(count - len(self._items)))
        spent = time.thread_time() - start
        self.cpu_s += spent
        return spent

    def take(self, count: int) -> list:
        """Remove and return ``count`` factors (computing on the spot any the pool lacks)."""
        self._items.extend(self._one() for _ in range(count - len(self._items)))
        out, self._items = self._items[:count], self._items[count:]
        return out

    def __len__(self) -> int:
        return len(self._items)


class PlainOps:
    """The plaintext baseline: the same messages, floats instead of ciphertexts (no offline phase)."""

    encrypted = False

    def enc(self, x: np.ndarray):
        return np.asarray(x, dtype=np.float64)

    def add_plain(self, e, x: np.ndarray):
        return e + x

    def add(self, a, b):
        return a + b

    def xt(self, x: np.ndarray, e):
        return x.T @ e

    def to_wire(self, e) -> dict:
        return {"v": np.asarray(e, dtype=np.float64)}

    def from_wire(self, fields: dict, count: int, what: str):
        v = fields.get("v")
        if not isinstance(v, np.ndarray) or v.dtype != np.float64 or v.shape != (count,) or not np.all(np.isfinite(v)):
            raise ProtocolError(f"{what}: expected {count} finite float64 values")
        return v

    def mask(self, e):
        return e, None

    def reserve(self, count: int) -> float:
        return 0.0

    def reveal(self, e) -> dict:
        return {"v": np.asarray(e, dtype=np.float64)}

    def wire_count(self, count: int) -> int:
        return count

    def unmask(self, fields: dict, masks, count: int, what: str) -> np.ndarray:
        return self.from_wire(fields, count, what)


@dataclass(frozen=True)
class Enc:
    """A Paillier vector and its fixed-point scale (values are ``ints / 2^scale``)."""

    cv: he.CipherVector
    scale: int


class PaillierOps:
    """Encrypted arithmetic at ``precision_bits`` fixed point; ``secret`` only at the key holder.

    Paillier (:mod:`he`) or OU (:mod:`he_ou`), whichever scheme ``public`` belongs to: the same
    messages, packing and masks.
    """

    encrypted = True

    def __init__(self, public: he.PublicKey, precision_bits: int, secret: he.SecretKey | None = None):
        self.public, self.bits, self.secret = public, precision_bits, secret
        self._pool: ObfuscatorPool | None = None

    @property
    def pool(self) -> ObfuscatorPool:
        """This party's random factors (made on first use: a party that never encrypts pays nothing)."""
        if self._pool is None:
            self._pool = ObfuscatorPool(self.public, self.secret)
        return self._pool

    def reserve(self, count: int) -> float:
        """Compute ``count`` random factors ahead (the offline phase); return its CPU-seconds."""
        return self.pool.fill(count)

    def enc(self, x: np.ndarray) -> Enc:
        ints = he.encode(x, self.bits)
        factors = he.CipherVector(self.public, tuple(self.pool.take(len(ints))))
        return Enc(_scheme(self.public).add_plain(factors, ints), self.bits)

    def add_plain(self, e: Enc, x: np.ndarray) -> Enc:
        return Enc(_scheme(self.public).add_plain(e.cv, he.encode(x, e.scale)), e.scale)

    def add(self, a: Enc, b: Enc) -> Enc:
        """Return the encrypted sum of two vectors at the same fixed-point scale."""
        if a.scale != b.scale:
            raise ProtocolError(f"cannot add ciphertexts at fixed-point scales {a.scale} and {b.scale}")
        return Enc(he.add(a.cv, b.cv), a.scale)  # the same product for Paillier and OU

    def xt(self, x: np.ndarray, e: Enc) -> Enc:
        ints = np.rint(np.asarray(x).T * (1 << self.bits)).astype(np.int64)
        return Enc(he.matvec(ints, e.cv), e.scale + self.bits)

    def to_wire(self, e: Enc) -> dict:
        return {**he.to_wire(e.cv), "scale": e.scale}

    def from_wire(self, fields: dict, count: int, what: str) -> Enc:
        scale = fields.get("scale")
        if not isinstance(scale, int) or not 0 < scale <= 4 * self.bits:
            raise ProtocolError(f"{what}: expected a fixed-point 'scale' in 1..{4 * self.bits}, got {scale!r}")
        return Enc(he.from_wire(self.public, fields, count, what), scale)

    def wire_count(self, count: int) -> int:
        """How many ciphertexts a masked vector of ``count`` values travels as (packed)."""
        return -(-count // self.slots)

    @property
    def slots(self) -> int:
        return (self.public.max_int.bit_length() - 2) // SLOT_BITS

    def mask(self, e: Enc) -> tuple[Enc, tuple]:
        """Pack ``slots`` values per ciphertext (Horner: ``c_0 * (c_1 * ...)^(2^SLOT_BITS)``) and mask each slot.

        A slot holds ``v + 2^VALUE_BITS + r`` with ``|v| < 2^VALUE_BITS`` and ``r`` uniform below
        ``2^(VALUE_BITS + 41)``: the key holder sees each value hidden up to statistical distance
        ``2^-40``, and decrypts one ciphertext per ``slots`` values instead of one per value.
        """
        nsq, n, shift = self.public.nsq, self.public.n, 1 << SLOT_BITS
        out, masks = [], []
        for i in range(0, len(e.cv), self.slots):
            group = e.cv.cts[i : i + self.slots]
            acc = group[-1]
            for c in reversed(group[:-1]):
                acc = gmpy2.powmod(acc, shift, nsq) * c % nsq
            rs = [secrets.randbits(VALUE_BITS + 41) for _ in group]
            plain = sum(((1 << VALUE_BITS) + r) << (j * SLOT_BITS) for j, r in enumerate(rs))
            factor = self.public.plain_factor(plain) if _scheme(self.public) is he_ou else (1 + plain * n) % nsq
            out.append(acc * factor % nsq)
            masks.extend(rs)
        return Enc(he.CipherVector(self.public, tuple(out)), e.scale), (tuple(masks), e.scale)

    def reveal(self, e: Enc) -> dict:
        """Decrypt masked packed values (the key holder): residues modulo ``n`` (OU: below the packed bound).

        Raises:
            ProtocolError: another key; with OU, a value a packed masked vector cannot hold (refused).
        """
        if _scheme(self.public) is he_ou:  # refuse anything a packed masked vector cannot hold (OU's key guard)
            return {"ct": tuple(he_ou.decrypt(self.secret, e.cv, signed=False, bound=1 << (self.slots * SLOT_BITS)))}
        return {"ct": tuple(he.decrypt(self.secret, e.cv, signed=False))}

    def unmask(self, fields: dict, masks: tuple, count: int, what: str) -> np.ndarray:
        values, (rs, scale) = fields.get("ct"), masks
        packed = self.wire_count(count)
        top = self.public.max_int
        if not isinstance(values, tuple) or len(values) != packed or not all(0 <= v < top for v in values):
            raise ProtocolError(f"{what}: expected {packed} packed values below the key's plaintext bound")
        low, out = (1 << SLOT_BITS) - 1, []
        for k, r in enumerate(rs):
            slot = (values[k // self.slots] >> ((k % self.slots) * SLOT_BITS)) & low
            out.append(slot - (1 << VALUE_BITS) - r)
        if any(abs(v) >= 1 << VALUE_BITS for v in out):
            raise ProtocolError(f"{what}: an unmasked value is out of range (tampered or overflowed)")
        return he.decode(out, scale)


__all__ = [
    "SCHEMES",
    "SLOT_BITS",
    "VALUE_BITS",
    "Enc",
    "ObfuscatorPool",
    "PaillierOps",
    "PlainOps",
    "keygen",
    "public_from_wire",
    "public_to_wire",
]
