"""Hashing ids to X25519 points and blinding them, for :mod:`hamrah.vertical.psi` (kept free of torch:
worker processes import it).

Hash to group: ``H(x) = SHA-256("hamrah-psi|" || x)`` with the top bit cleared, read as an X25519
u-coordinate; ``cryptography``'s X25519 (RFC 7748) multiplies it by a clamped scalar (a multiple of
the cofactor 8). A hash that lands on the quadratic twist is multiplied on the twist, which is also
a large prime-order group for Curve25519 (twist security), so every id maps to a point of one of two
groups where DDH is believed hard. A uniform map into one prime-order group (ristretto255's
``from_hash``) would be the textbook choice; neither ``cryptography`` nor PyNaCl 1.6 exposes it.
"""

from __future__ import annotations

import hashlib
import multiprocessing as mp
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from hamrah.core.errors import ProtocolError

POINT = 32


def hash_ids(ids: np.ndarray) -> np.ndarray:
    """Return each int64 id hashed to an X25519 u-coordinate, as a ``(n, 32)`` uint8 array."""
    out = bytearray()
    for v in np.asarray(ids, dtype=np.int64).tolist():
        out += hashlib.sha256(b"hamrah-psi|" + int(v).to_bytes(8, "little", signed=True)).digest()
    points = np.frombuffer(out, dtype=np.uint8).reshape(-1, POINT).copy()
    points[:, 31] &= 0x7F
    return points


def blind(key: X25519PrivateKey | bytes, points: np.ndarray) -> np.ndarray:
    """Return ``points`` (``(n, 32)`` uint8) multiplied by ``key``'s scalar (a key or its raw bytes).

    Raises:
        ProtocolError: a point of small order (only a hostile party sends one).
    """
    if isinstance(key, bytes):
        key = X25519PrivateKey.from_private_bytes(key)
    data = np.ascontiguousarray(points, dtype=np.uint8).tobytes()
    try:
        out = b"".join(
            key.exchange(X25519PublicKey.from_public_bytes(data[i : i + POINT])) for i in range(0, len(data), POINT)
        )
    except ValueError:
        raise ProtocolError("psi: a received value is a point of small order (not a blinded id)") from None
    return np.frombuffer(out, dtype=np.uint8).reshape(-1, POINT)


def _hash_and_blind(key: bytes, ids: np.ndarray) -> np.ndarray:
    return blind(key, hash_ids(ids))


class Blinder:
    """Blinds a stream of chunks in order, in this thread or in a pool of ``workers`` processes."""

    def __init__(self, workers: int):
        self._raw = X25519PrivateKey.generate().private_bytes_raw()  # the party's secret scalar
        self.workers = workers
        self._pool = ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) if workers > 1 else None

    def stream(self, chunks: Iterable[np.ndarray], ids: bool = False) -> Iterator[np.ndarray]:
        """Yield each chunk blinded (``ids``: chunks of ids, hashed first), keeping ``2 workers`` in flight."""
        fn = _hash_and_blind if ids else blind
        if self._pool is None:
            for c in chunks:
                yield fn(self._raw, c)
            return
        pending: list[Future] = []
        for c in chunks:
            pending.append(self._pool.submit(fn, self._raw, c))
            if len(pending) >= 2 * self.workers:
                yield pending.pop(0).result()
        for f in pending:
            yield f.result()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)


__all__ = ["POINT", "Blinder", "blind", "hash_ids"]
