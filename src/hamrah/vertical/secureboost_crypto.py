"""SecureBoost's encrypted arithmetic: g/h packing, encrypted histograms, cipher compression.

Built on the vertical Paillier backend :mod:`hamrah.vertical.he`. Three tricks, all exact:

- **g/h packing**: the guest encrypts one plaintext per row, ``h * 2^S + g`` (fixed-point ints,
  ``g`` signed in the low ``S`` bits), so every histogram addition adds both sums at once
  (SecureBoost's packing as in FATE's HeteroSecureBoost and Chen et al. 2021, *SecureBoost+*).
- **sparse bins**: a host never builds the bin holding most rows of a feature (its "default" bin,
  bin 0 of a one-hot feature); the guest, which knows each node's total g and h, recovers it as the
  total minus the other bins. Only rows outside the default bin cost a ciphertext multiplication.
- **cipher compression**: before sending, the host folds ``k`` packed bin sums into one ciphertext
  by Horner's rule (``C = (...(c_{k-1} * 2^W + c_{k-2}) * 2^W ...) + c_0`` in the plaintext), so the
  guest decrypts ``k`` times fewer ciphertexts (FATE's "cipher compressing"); each compressed
  ciphertext is re-randomised with a fresh encryption of zero.

Slot sizes (:class:`GHPacking`) make overflow impossible: with ``N`` rows, ``|g| <= 2^P``,
``0 <= h <= 2^(P-2)`` and ``c = bit_length(N)``, any sum of at most ``N`` rows has ``|G| < 2^(S-1)``
for ``S = P + c + 1``, and ``|H 2^S + G| < 2^(W-1)`` for ``W = S + P + c``;
``tests/vertical/test_secureboost_crypto.py`` checks it over arbitrary inputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import gmpy2
import numpy as np

from hamrah.core.errors import ProtocolError
from hamrah.vertical import he


@dataclass(frozen=True)
class GHPacking:
    """Slot layout of packed (gradient, hessian) sums.

    Attributes:
        precision_bits: ``P``, the fixed-point bits of g and h.
        count_bits: ``c``; sums run over fewer than ``2^c`` rows.
        key_bits: the Paillier modulus size.
    """

    precision_bits: int
    count_bits: int
    key_bits: int

    @property
    def g_bits(self) -> int:
        """``S``: the low slot holding the signed gradient sum."""
        return self.precision_bits + self.count_bits + 1

    @property
    def width(self) -> int:
        """``W``: bits of one packed (G, H) sum, signed."""
        return self.g_bits + self.precision_bits + self.count_bits

    @property
    def per_ciphertext(self) -> int:
        """How many packed sums one compressed ciphertext carries (within ``|m| <= n // 3``)."""
        return max(1, (self.key_bits - 3) // self.width)

    def pack(self, g: np.ndarray, h: np.ndarray) -> list[int]:
        """Return ``h * 2^S + g`` per row.

        Raises:
            ProtocolError: a ``g`` outside ``[-2^P, 2^P]`` or ``h`` outside ``[0, 2^(P-2)]``.
        """
        top = 1 << self.precision_bits
        if g.size and (np.abs(g).max() > top or h.min() < 0 or h.max() > top >> 2):
            raise ProtocolError(
                f"g/h packing: expected |g| <= 2^{self.precision_bits} and 0 <= h <= 2^{self.precision_bits - 2}"
            )
        if len(g) >= 1 << self.count_bits:
            raise ProtocolError(f"g/h packing: {len(g)} rows exceed the {self.count_bits}-bit count slot")
        s = self.g_bits
        return [(int(hh) << s) + int(gg) for gg, hh in zip(g.tolist(), h.tolist())]

    def unpack(self, values: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """Return the int64 ``(G, H)`` sums held by packed values ``H * 2^S + G``."""
        s, half = self.g_bits, 1 << (self.g_bits - 1)
        gs = [((v + half) & ((1 << s) - 1)) - half for v in values]
        hs = [(v - gg) >> s for v, gg in zip(values, gs)]
        return np.array(gs, dtype=np.int64), np.array(hs, dtype=np.int64)

    def split(self, m: int, count: int) -> list[int]:
        """Return the ``count`` signed ``W``-bit values Horner-folded into the plaintext ``m``."""
        w, half, out = self.width, 1 << (self.width - 1), []
        for _ in range(count):
            v = ((m + half) & ((1 << w) - 1)) - half
            out.append(v)
            m = (m - v) >> w
        if m != 0:
            raise ProtocolError("compressed histogram: the plaintext holds more values than announced")
        return out


def packing_for(precision_bits: int, rows: int, key_bits: int) -> GHPacking:
    """Return the packing for sums over at most ``rows`` rows."""
    return GHPacking(precision_bits, max(1, int(rows).bit_length()), key_bits)


@dataclass(frozen=True)
class SparseLayout:
    """Which bins a host sends: every bin of every feature but the feature's default bin.

    Attributes:
        num_bins: bins per feature.
        default: the default (most populated) bin per feature.
    """

    num_bins: np.ndarray
    default: np.ndarray

    @property
    def size(self) -> int:
        """Number of bins sent per node."""
        return int(self.num_bins.sum() - len(self.num_bins))

    def kept_index(self) -> np.ndarray:
        """Return, for each sent bin, its position in the full flat histogram."""
        full = np.concatenate([[0], np.cumsum(self.num_bins)])[:-1]
        return np.concatenate(
            [full[f] + np.delete(np.arange(nb), self.default[f]) for f, nb in enumerate(self.num_bins.tolist())]
            or [np.zeros(0, np.int64)]
        )

    def kept_position(self) -> list[np.ndarray]:
        """Return, per feature, a map bin -> position among the sent bins (-1 for the default)."""
        out, start = [], 0
        for nb, d in zip(self.num_bins.tolist(), self.default.tolist()):
            pos = np.full(nb, -1, dtype=np.int64)
            pos[np.arange(nb) != d] = np.arange(start, start + nb - 1)
            out.append(pos)
            start += nb - 1
        return out

    def restrict(self, features: np.ndarray) -> SparseLayout:
        """Return the layout of only the ``features`` (a boolean mask) a tree may split on."""
        return SparseLayout(self.num_bins[features], self.default[features])

    def fill(self, sent: np.ndarray, total: int) -> np.ndarray:
        """Return the full flat histogram from the sent bins and the node's total."""
        full = np.zeros(int(self.num_bins.sum()), dtype=np.int64)
        full[self.kept_index()] = sent
        starts = np.concatenate([[0], np.cumsum(self.num_bins)])
        for f, d in enumerate(self.default.tolist()):
            a, b = int(starts[f]), int(starts[f + 1])
            full[a + d] = total - (full[a:b].sum() - full[a + d])
        return full


def sparse_layout(bins: np.ndarray, num_bins: np.ndarray) -> SparseLayout:
    """Return the layout whose default bin is each feature's most populated bin (lowest on ties)."""
    default = np.array(
        [int(np.argmax(np.bincount(bins[:, f], minlength=int(nb)))) for f, nb in enumerate(num_bins.tolist())],
        dtype=np.int64,
    )
    return SparseLayout(np.asarray(num_bins, dtype=np.int64), default)


def encrypted_histogram(cts: tuple, nsq, bins: np.ndarray, rows: np.ndarray, layout: SparseLayout) -> list:
    """Return the packed ciphertext sums of ``rows`` for every sent bin (1 for an empty bin).

    Args:
        cts: the guest's packed ciphertext of every row (gmpy2 integers).
        nsq: ``n^2``.
        bins: this host's ``rows x features`` bin indices.
        rows: the node's row indices.
        layout: the sparse layout (default bins skipped).
    """
    out = [gmpy2.mpz(1)] * layout.size
    for f, pos in enumerate(layout.kept_position()):
        col = bins[rows, f]
        keep = col != layout.default[f]
        for r, p in zip(rows[keep].tolist(), pos[col[keep]].tolist()):
            out[p] = out[p] * cts[r] % nsq
    return out


def subtract(parent: list, child: list, nsq) -> list:
    """Return the encryption of ``parent - child`` slot-wise (histogram subtraction)."""
    return [p * gmpy2.invert(c, nsq) % nsq for p, c in zip(parent, child)]


def compress(public: he.PublicKey, sums: list, packing: GHPacking, rng=None) -> he.CipherVector:
    """Fold ``packing.per_ciphertext`` packed sums into each ciphertext and re-randomise them."""
    k, nsq, shift = packing.per_ciphertext, public.nsq, 1 << packing.width
    folded = []
    for start in range(0, len(sums), k):
        group = sums[start : start + k]
        acc = group[-1]
        for c in reversed(group[:-1]):
            acc = gmpy2.powmod(acc, shift, nsq) * c % nsq
        folded.append(acc)
    zeros = he.encrypt(public, [0] * len(folded), rng)
    return he.add(he.CipherVector(public, tuple(folded)), zeros)


def decompress(
    secret: he.SecretKey, vector: he.CipherVector, packing: GHPacking, count: int
) -> tuple[np.ndarray, np.ndarray]:
    """Return the int64 ``(G, H)`` of ``count`` packed sums from compressed ciphertexts.

    Raises:
        ProtocolError: the number of ciphertexts does not match ``count``, or a plaintext is malformed.
    """
    k = packing.per_ciphertext
    if len(vector) != -(-count // k):
        raise ProtocolError(f"compressed histogram: expected {-(-count // k)} ciphertexts, got {len(vector)}")
    values: list[int] = []
    for i, m in enumerate(he.decrypt(secret, vector)):
        values.extend(packing.split(m, min(k, count - i * k)))
    return packing.unpack(values)
