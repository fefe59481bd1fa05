"""Key agreement, authenticated encryption and the mask PRG of secure aggregation.

The primitives of Bonawitz et al. 2017 (*Practical Secure Aggregation for Privacy-Preserving Machine
Learning*, CCS), Section 4, taken from ``cryptography``:

- KA: X25519 Diffie-Hellman; the raw shared secret goes through HKDF-SHA256 with a purpose label and
  the round id, so the encryption key and the mask seed of one pair of clients are independent.
- AE: AES-256-GCM. A pair (u, v) derives one key for both directions, so the 96-bit nonce is
  ``sender || receiver || 0`` (unique per key and direction, never sent), and the associated data
  binds the round, the sender and the receiver (the paper puts ``u || v`` in the plaintext instead).
- PRG: the AES-256-CTR keystream under a 32-byte seed, read as unsigned integers of the ring's dtype.
  AES-CTR is a standard cryptographic PRG and runs at several GB/s with AES-NI; numpy's Philox would
  be as fast but is not a cryptographic generator (its output reveals its key), which matters here:
  a mask must look uniform to a server that sees mask-plus-input.
"""

from __future__ import annotations

import hashlib

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from hamrah.core.errors import AuthError, ProtocolError

KEY_BYTES = 32
"""Bytes of an X25519 key, a derived symmetric key and a mask seed."""

TAG_BYTES = 16
"""Bytes AES-GCM adds to a plaintext."""

_LABEL = b"hamrah-secagg/1/"


def keypair(randbytes) -> tuple[bytes, bytes]:
    """Return a fresh X25519 ``(private, public)`` key pair as raw 32-byte strings.

    Args:
        randbytes: ``n -> n random bytes`` (``os.urandom`` in production, ``DeterministicRandom`` in tests).
    """
    private = randbytes(KEY_BYTES)
    public = X25519PrivateKey.from_private_bytes(private).public_key().public_bytes_raw()
    return private, public


def private_key(raw: bytes) -> X25519PrivateKey:
    """Return the X25519 private key object of 32 raw bytes (load once, agree many times)."""
    return X25519PrivateKey.from_private_bytes(raw)


def agree(private: X25519PrivateKey, peer_public: bytes, purpose: bytes, round_id: int) -> bytes:
    """Return the 32-byte key that ``private`` and ``peer_public`` share for ``purpose`` in ``round_id``.

    Raises:
        ProtocolError: the peer's public key is not a valid X25519 point (wrong length, low order).
    """
    try:
        shared = private.exchange(X25519PublicKey.from_public_bytes(peer_public))
    except ValueError as exc:
        raise ProtocolError(f"invalid X25519 public key: {exc}") from None
    return derive(shared, purpose, round_id)


def derive(secret: bytes, purpose: bytes, round_id: int) -> bytes:
    """Return HKDF-SHA256(secret) labelled with ``purpose`` and ``round_id`` (32 bytes)."""
    info = _LABEL + purpose + b"/" + round_id.to_bytes(8, "big")
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=info).derive(secret)


def _nonce(sender: int, receiver: int) -> bytes:
    return sender.to_bytes(4, "big") + receiver.to_bytes(4, "big") + b"\0\0\0\0"


def _aad(sender: int, receiver: int, round_id: int) -> bytes:
    return _LABEL + round_id.to_bytes(8, "big") + sender.to_bytes(4, "big") + receiver.to_bytes(4, "big")


def seal(key: bytes, sender: int, receiver: int, round_id: int, plaintext: bytes) -> bytes:
    """Encrypt and authenticate ``plaintext`` from ``sender`` to ``receiver`` (AES-256-GCM)."""
    return AESGCM(key).encrypt(_nonce(sender, receiver), plaintext, _aad(sender, receiver, round_id))


def open_sealed(key: bytes, sender: int, receiver: int, round_id: int, ciphertext: bytes) -> bytes:
    """Decrypt a ciphertext made by :func:`seal`.

    Raises:
        AuthError: the ciphertext was tampered with, or was not made by ``sender`` for ``receiver`` in this round.
    """
    try:
        return AESGCM(key).decrypt(_nonce(sender, receiver), ciphertext, _aad(sender, receiver, round_id))
    except InvalidTag:
        raise AuthError(
            f"share ciphertext from client {sender} to client {receiver} failed authentication "
            f"(tampered, or not made for round {round_id})"
        ) from None


def prg(seed: bytes, length: int, dtype: np.dtype) -> np.ndarray:
    """Expand a 32-byte ``seed`` into ``length`` uniform integers of ``dtype`` (AES-256-CTR keystream)."""
    itemsize = np.dtype(dtype).itemsize
    encryptor = Cipher(algorithms.AES(seed), modes.CTR(b"\0" * 16)).encryptor()
    return np.frombuffer(encryptor.update(bytes(length * itemsize)), dtype=np.dtype(dtype).newbyteorder("<"))


class DeterministicRandom:
    """A seeded byte source for simulations and tests: ``n -> n bytes`` from an AES-CTR keystream.

    Reproducible by design, so never use it for real clients: pass ``os.urandom`` there.
    """

    def __init__(self, seed: int | bytes):
        material = seed if isinstance(seed, bytes) else int(seed).to_bytes(16, "big", signed=True)
        key = hashlib.sha256(b"hamrah-secagg/deterministic/" + material).digest()
        self._stream = Cipher(algorithms.AES(key), modes.CTR(b"\0" * 16)).encryptor()

    def __call__(self, n: int) -> bytes:
        """Return the next ``n`` bytes of the stream."""
        return self._stream.update(bytes(n))
