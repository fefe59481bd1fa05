"""Compact bytes for Paillier public keys and encrypted vectors.

Public key: ``b"HPK1"``, the byte length of ``n`` (u16), ``n`` big-endian.
Vector: ``b"HPV1"``, a fixed header (below), then every ciphertext big-endian in ``width`` bytes
(the byte length of ``n^2``: 512 bytes for a 2048-bit key). The header names the key by an 8-byte
SHA-256 fingerprint of ``n`` rather than carrying it, so a vector costs its ciphertexts plus
50 bytes. Every field is checked on decoding; anything malformed raises ``ProtocolError``.
"""

from __future__ import annotations

import hashlib
import struct

import gmpy2

from hamrah.core.errors import HamrahError, ProtocolError
from hamrah.he.encoding import Packing
from hamrah.he.paillier import MIN_KEY_BITS, EncryptedVector, PublicKey

_KEY_MAGIC, _VEC_MAGIC = b"HPK1", b"HPV1"
# flags, key fingerprint, length, scale_bits, count, ciphertexts, width,
# packing: key_bits, precision_bits, max_clients, bound
_HEADER = struct.Struct(">B8sQHIIHIBId")


def fingerprint(public_key: PublicKey) -> bytes:
    """Return the 8-byte SHA-256 fingerprint of a public key's modulus."""
    n = public_key.n
    return hashlib.sha256(n.to_bytes((n.bit_length() + 7) // 8, "big")).digest()[:8]


def public_key_to_bytes(public_key: PublicKey) -> bytes:
    """Return the public key as ``HPK1 | len(n) | n``."""
    n = public_key.n
    size = (n.bit_length() + 7) // 8
    return _KEY_MAGIC + struct.pack(">H", size) + n.to_bytes(size, "big")


def public_key_from_bytes(data: bytes) -> PublicKey:
    """Return the public key encoded by :func:`public_key_to_bytes`.

    Raises:
        ProtocolError: if ``data`` is not a well-formed key of at least 512 bits.
    """
    data = bytes(data)
    if data[:4] != _KEY_MAGIC or len(data) < 6:
        raise ProtocolError(f"public key: expected bytes starting with {_KEY_MAGIC!r}, got {data[:4]!r}")
    (size,) = struct.unpack(">H", data[4:6])
    if len(data) != 6 + size:
        raise ProtocolError(f"public key: header says {size} bytes of modulus, got {len(data) - 6}")
    n = int.from_bytes(data[6:], "big")
    if n.bit_length() < MIN_KEY_BITS or n % 2 == 0:
        raise ProtocolError(
            f"public key: expected an odd modulus of at least {MIN_KEY_BITS} bits, got {n.bit_length()} bits"
        )
    return PublicKey(n)


def vector_to_bytes(vector: EncryptedVector) -> bytes:
    """Return an encrypted vector as a header followed by fixed-width ciphertexts."""
    pk = vector.packing or Packing(key_bits=vector.public_key.n.bit_length(), max_clients=1)
    width = (vector.public_key.nsquare.bit_length() + 7) // 8
    header = _HEADER.pack(
        1 if vector.packing else 0,
        fingerprint(vector.public_key),
        vector.length,
        vector.scale_bits,
        vector.count,
        len(vector.ciphertexts),
        width,
        pk.key_bits,
        pk.precision_bits,
        pk.max_clients,
        float(pk.bound),
    )
    return _VEC_MAGIC + header + b"".join(c.to_bytes(width, "big") for c in vector.ciphertexts)


def vector_from_bytes(data: bytes, public_key: PublicKey) -> EncryptedVector:
    """Return the encrypted vector encoded by :func:`vector_to_bytes` under ``public_key``.

    Raises:
        ProtocolError: if ``data`` is malformed, truncated, for another key, or inconsistent.
    """
    data = bytes(data)
    start = len(_VEC_MAGIC) + _HEADER.size
    if data[:4] != _VEC_MAGIC or len(data) < start:
        raise ProtocolError(
            f"encrypted vector: expected bytes starting with {_VEC_MAGIC!r} and a "
            f"{_HEADER.size}-byte header, got {len(data)} bytes starting {data[:4]!r}"
        )
    flags, fp, length, scale_bits, count, num, width, key_bits, precision_bits, max_clients, bound = _HEADER.unpack(
        data[4:start]
    )
    if fp != fingerprint(public_key):
        raise ProtocolError(
            f"encrypted vector: encrypted under a different public key (fingerprint {fp.hex()}); expected "
            f"this key's {fingerprint(public_key).hex()} (a stale or wrong public key)"
        )
    nsq = public_key.nsquare
    if flags not in (0, 1) or width != (nsq.bit_length() + 7) // 8 or count < 1:
        raise ProtocolError(f"encrypted vector: bad header (flags={flags}, width={width}, count={count})")
    if len(data) != start + num * width:
        raise ProtocolError(
            f"encrypted vector: header says {num} ciphertexts of {width} bytes, got {len(data) - start} bytes"
        )
    packing = _packing(flags, key_bits, precision_bits, bound, max_clients, count)
    expected = length if packing is None else packing.num_plaintexts(length)
    if num != expected or (packing is not None and scale_bits != precision_bits):
        raise ProtocolError(f"encrypted vector: expected {expected} ciphertexts for {length} values, got {num}")
    cts = tuple(int.from_bytes(data[i : i + width], "big") for i in range(start, len(data), width))
    if any(not 0 < c < nsq for c in cts):
        raise ProtocolError("encrypted vector: a ciphertext is outside [1, n^2)")
    # c = k*n is no ciphertext: it makes the decrypted sum (p + q)^-1 mod n, which factors n
    n = gmpy2.mpz(public_key.n)
    bad = next((i for i, c in enumerate(cts) if gmpy2.gcd(c, n) != 1), None)
    if bad is not None:
        raise ProtocolError(f"encrypted vector: ciphertext {bad} shares a factor with n; expected a unit modulo n^2")
    return EncryptedVector(public_key, cts, length, scale_bits, packing, count)


def _packing(
    flags: int, key_bits: int, precision_bits: int, bound: float, max_clients: int, count: int
) -> Packing | None:
    if flags == 0:
        return None
    try:
        packing = Packing(key_bits, precision_bits, bound, max_clients)
        packing.check_clients(count)
    except HamrahError as exc:
        raise ProtocolError(f"encrypted vector: bad packing header: {exc}") from exc
    return packing
