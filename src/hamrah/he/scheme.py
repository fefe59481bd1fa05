"""One interface for additive aggregation under encryption: Paillier (packed) and CKKS.

Roles: a *key holder* runs ``keygen`` and keeps ``keys.secret``; clients get the public part and
``encrypt`` their update; the server holds only the public part, ``add``s ciphertexts and sends
the aggregate to the key holder, who ``decrypt_sum``s it. Every step is a pure function of its
inputs; bytes travel through ``public_to_bytes`` / ``ciphertext_to_bytes`` and back.

Example:
    >>> scheme = PaillierScheme(PaillierConfig(key_bits=1024, max_clients=2))
    >>> keys = scheme.keygen(np.random.default_rng(0))
    >>> total = scheme.add(scheme.encrypt(keys.public, [0.5, -1.0]), scheme.encrypt(keys.public, [0.25, 0.5]))
    >>> scheme.decrypt_sum(keys.secret, total).round(6).tolist()
    [0.75, -0.5]
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from functools import reduce
from typing import Any

import numpy as np

from hamrah.core.errors import ProtocolError
from hamrah.he import ckks, paillier, paillier_codec
from hamrah.he.encoding import Packing


@dataclass(frozen=True)
class HEKeys:
    """A key pair: ``public`` goes to clients and the server, ``secret`` stays with the key holder."""

    public: Any
    secret: Any


class HEScheme(ABC):
    """Encrypt vectors, add ciphertexts without the secret key, decrypt only the aggregate."""

    name: str

    @abstractmethod
    def keygen(self, rng: np.random.Generator | None = None) -> HEKeys:
        """Return a fresh key pair (``rng=None``: the OS CSPRNG)."""

    @abstractmethod
    def encrypt(self, public: Any, vector: np.ndarray | Sequence[float], rng: np.random.Generator | None = None) -> Any:
        """Return ``vector`` encrypted under ``public`` (a client's step)."""

    @abstractmethod
    def add(self, a: Any, b: Any) -> Any:
        """Return the encryption of ``a + b`` (the server's step; no secret key)."""

    @abstractmethod
    def scale(self, a: Any, k: int) -> Any:
        """Return the encryption of ``k * a`` for a positive integer ``k`` (the server's weighting; no secret key)."""

    @abstractmethod
    def decrypt_sum(self, secret: Any, aggregate: Any) -> np.ndarray:
        """Return the float64 sum an aggregate encrypts (the key holder's step)."""

    @abstractmethod
    def public_to_bytes(self, public: Any) -> bytes:
        """Return the public key material as bytes."""

    @abstractmethod
    def public_from_bytes(self, data: bytes) -> Any:
        """Return the public key material encoded by :meth:`public_to_bytes`."""

    @abstractmethod
    def ciphertext_to_bytes(self, c: Any) -> bytes:
        """Return a ciphertext vector as bytes."""

    @abstractmethod
    def ciphertext_from_bytes(self, public: Any, data: bytes) -> Any:
        """Return the ciphertext vector encoded by :meth:`ciphertext_to_bytes`."""

    @abstractmethod
    def num_ciphertexts(self, length: int) -> int:
        """Return how many ciphertexts a vector of ``length`` values takes."""

    def sum(self, ciphertexts: Sequence[Any]) -> Any:
        """Return the encryption of the sum of ``ciphertexts``.

        Raises:
            ProtocolError: if ``ciphertexts`` is empty.
        """
        if not ciphertexts:
            raise ProtocolError("ciphertexts: expected at least one, got none")
        return reduce(self.add, ciphertexts)


@dataclass(frozen=True)
class PaillierConfig:
    """Packed Paillier for ``|x| <= bound`` from up to ``max_clients`` clients (see :class:`Packing`)."""

    key_bits: int = 2048
    precision_bits: int = 24
    bound: float = 1.0
    max_clients: int = 100

    @property
    def packing(self) -> Packing:
        """Return the slot layout; raises ``ConfigError`` when the headroom does not fit the key."""
        return Packing(self.key_bits, self.precision_bits, self.bound, self.max_clients)


class PaillierScheme(HEScheme):
    """Packed Paillier aggregation (Paillier 1999; packing as in BatchCrypt, Zhang et al. 2020).

    Each value's error is at most ``count * 2^-(precision_bits + 1)``; the decoded integers equal the
    sum of the fixed-point encodings exactly.
    """

    name = "paillier"

    def __init__(self, config: PaillierConfig | None = None) -> None:
        self.config = config or PaillierConfig()
        self.packing = self.config.packing  # validates the headroom now, not at the first encryption

    def keygen(self, rng: np.random.Generator | None = None) -> HEKeys:
        public, secret = paillier.paillier_keygen(self.config.key_bits, rng)
        return HEKeys(public, secret)

    def encrypt(self, public, vector, rng=None) -> paillier.EncryptedVector:
        return paillier.encrypt_packed(_paillier_public(public), vector, self.packing, rng)

    def add(self, a, b) -> paillier.EncryptedVector:
        return paillier.add(a, b)

    def scale(self, a, k: int) -> paillier.EncryptedVector:
        return paillier.scale_packed(a, k)

    def decrypt_sum(self, secret, aggregate) -> np.ndarray:
        if not isinstance(secret, paillier.PrivateKey):
            raise ProtocolError(f"decrypt_sum: expected a Paillier private key, got {type(secret).__name__}")
        return paillier.decrypt_vector(secret, aggregate)

    def public_to_bytes(self, public) -> bytes:
        return paillier_codec.public_key_to_bytes(public)

    def public_from_bytes(self, data: bytes) -> paillier.PublicKey:
        return paillier_codec.public_key_from_bytes(data)

    def ciphertext_to_bytes(self, c) -> bytes:
        return paillier_codec.vector_to_bytes(c)

    def ciphertext_from_bytes(self, public, data: bytes) -> paillier.EncryptedVector:
        c = paillier_codec.vector_from_bytes(data, public)
        if c.packing != self.packing:
            raise ProtocolError(f"ciphertext: packed as {c.packing}, expected {self.packing}")
        return c

    def num_ciphertexts(self, length: int) -> int:
        return self.packing.num_plaintexts(length)


def _paillier_public(public: Any) -> paillier.PublicKey:
    if not isinstance(public, paillier.PublicKey):
        raise ProtocolError(f"encrypt: expected a Paillier public key, got {type(public).__name__}")
    return public


class CKKSScheme(HEScheme):
    """Batched CKKS aggregation (Cheon et al. 2017) through TenSEAL; see :mod:`hamrah.he.ckks`.

    ``rng`` is accepted for the common interface and unused: SEAL draws keys and noise from its own
    CSPRNG, so CKKS ciphertexts and sums are never bit-reproducible (they stay within
    ``config.error_bound(count)``).
    """

    name = "ckks"

    def __init__(self, config: ckks.CKKSConfig | None = None) -> None:
        self.config = config or ckks.CKKSConfig()

    def keygen(self, rng: np.random.Generator | None = None) -> HEKeys:
        public, secret = ckks.ckks_keygen(self.config)
        return HEKeys(public, secret)

    def encrypt(self, public, vector, rng=None) -> ckks.CKKSCiphertext:
        return ckks.ckks_encrypt(public, vector, self.config)

    def add(self, a, b) -> ckks.CKKSCiphertext:
        return ckks.ckks_add(a, b, self.config)

    def scale(self, a, k: int) -> ckks.CKKSCiphertext:
        return ckks.ckks_scale(a, k, self.config)

    def decrypt_sum(self, secret, aggregate) -> np.ndarray:
        """Return the decrypted sum; ProtocolError when a value lies beyond what ``bound`` times the sum's
        total weight allows (:func:`~hamrah.he.ckks.ckks_check_sum`)."""
        values = ckks.ckks_decrypt(secret, aggregate)
        ckks.ckks_check_sum(values, aggregate.count, self.config)
        return values

    def public_to_bytes(self, public) -> bytes:
        return ckks.ckks_public_to_bytes(public)

    def public_from_bytes(self, data: bytes):
        return ckks.ckks_public_from_bytes(data)

    def ciphertext_to_bytes(self, c) -> bytes:
        return ckks.ckks_to_bytes(c)

    def ciphertext_from_bytes(self, public, data: bytes) -> ckks.CKKSCiphertext:
        return ckks.ckks_from_bytes(public, data, self.config)

    def num_ciphertexts(self, length: int) -> int:
        return self.config.num_ciphertexts(length)
