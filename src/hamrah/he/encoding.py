"""Fixed-point encoding of float vectors and slot packing for additively homomorphic schemes.

Paillier encrypts integers modulo ``n``. A float ``x`` becomes the integer ``round(x * 2^f)``
(``f`` = ``precision_bits``); the sum of ``k`` encodings decodes to the sum of the floats with an
error of at most ``k * 2^-(f+1)``.

Packing (the batching of Phong et al. 2018, *Privacy-Preserving Deep Learning via Additively
Homomorphic Encryption*, and BatchCrypt, Zhang et al. 2020) puts several encodings side by side in
one plaintext, each in a slot of ``w`` bits, so one ciphertext carries many values. Encodings are
shifted by an offset so every slot holds a non-negative integer in ``[0, 2 * offset]``; adding
ciphertexts adds slot by slot, and the slot width leaves headroom bits so that the sum of up to
``max_clients`` vectors never carries into the neighbouring slot.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from hamrah.core.errors import ConfigError, ProtocolError
from hamrah.core.numbers import check_number

# Encodings are formed in float64, exact while |x| * 2^f < 2^53.
_FLOAT64_EXACT_BITS = 53
_FLOAT64_MAX_BITS = 1023  # an integer of at most this many bits converts to a finite float64


def _as_finite_vector(x: np.ndarray | list[float]) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 1:
        raise ProtocolError(f"vector: expected a 1-D array, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        bad = int(np.flatnonzero(~np.isfinite(arr))[0])
        raise ProtocolError(f"vector[{bad}] is {arr[bad]}; expected finite values only")
    return arr


@dataclass(frozen=True)
class FixedPoint:
    """Encode floats as signed integers ``round(x * 2^precision_bits)``.

    Args:
        precision_bits: binary digits kept after the point (1..52).

    Raises:
        ConfigError: if ``precision_bits`` is outside 1..52.
    """

    precision_bits: int = 24

    def __post_init__(self) -> None:
        if (
            isinstance(self.precision_bits, bool)
            or not isinstance(self.precision_bits, int)
            or not 1 <= self.precision_bits < _FLOAT64_EXACT_BITS
        ):
            raise ConfigError(f"precision_bits: expected an integer in 1..52, got {self.precision_bits!r}")

    @property
    def scale(self) -> float:
        """Return ``2^precision_bits``."""
        return float(2**self.precision_bits)

    def encode(self, x: np.ndarray | list[float]) -> list[int]:
        """Return the signed integer encodings of a float vector.

        Raises:
            ProtocolError: if ``x`` is not 1-D, holds a non-finite value or one too large to encode exactly.
        """
        arr = _as_finite_vector(x)
        scaled = np.rint(arr * self.scale)
        if arr.size and np.abs(scaled).max() >= 2.0**_FLOAT64_EXACT_BITS:
            raise ProtocolError(
                f"vector: |value| * 2^{self.precision_bits} must stay below 2^53, got max |value| {np.abs(arr).max():g}"
            )
        return [int(v) for v in scaled]

    def decode(self, ints: list[int], scale_bits: int | None = None) -> np.ndarray:
        """Return the floats ``ints / 2^scale_bits`` (``scale_bits`` defaults to ``precision_bits``)."""
        denominator = 1 << (self.precision_bits if scale_bits is None else scale_bits)
        return np.array([v / denominator for v in ints], dtype=np.float64)


@dataclass(frozen=True)
class Packing:
    """Pack fixed-point values of ``|x| <= bound`` into slots with headroom for ``max_clients`` summands.

    Each value is encoded as ``round(x * 2^f) + offset`` with ``offset = ceil(bound * 2^f)``, a
    non-negative integer of at most ``2 * offset``. The sum of ``max_clients`` such values is at most
    ``max_clients * 2 * offset``; the slot width ``slot_bits`` is that number's bit length, so the
    headroom over one value is ``headroom_bits = slot_bits - (2 * offset).bit_length()``.
    A plaintext holds ``slots = (key_bits - 1) // slot_bits`` values, so a packed sum stays below
    ``2^(key_bits - 1) <= n``.

    Args:
        key_bits: bit length of the Paillier modulus ``n``.
        precision_bits: fixed-point fraction bits ``f``.
        bound: largest absolute value a client may encode.
        max_clients: most vectors that may be summed before decryption.

    Raises:
        ConfigError: if a field is out of range or one slot does not fit in a plaintext.
    """

    key_bits: int = 2048
    precision_bits: int = 24
    bound: float = 1.0
    max_clients: int = 100

    def __post_init__(self) -> None:
        FixedPoint(self.precision_bits)  # validates precision_bits
        for name in ("key_bits", "max_clients"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name}: expected a positive integer, got {value!r}")
        check_number("bound", self.bound, 0.0, open_low=True)
        if self.bound * 2**self.precision_bits > 2 ** (_FLOAT64_EXACT_BITS - 1) - 1:  # offset >= 2^51, no ceil(inf)
            raise ConfigError(
                f"bound * 2^precision_bits: expected below 2^52, got {self.bound} * "
                f"2^{self.precision_bits}; lower bound or precision_bits"
            )
        if self.slot_bits > _FLOAT64_MAX_BITS:  # a slot's sum is decoded through float64
            raise ConfigError(
                f"packing: a slot of {self.slot_bits} bits (bound={self.bound}, max_clients={self.max_clients}) "
                f"would overflow float64 when decoded; expected slot_bits <= {_FLOAT64_MAX_BITS}: lower max_clients"
            )
        if self.slots < 1:
            raise ConfigError(
                f"packing: a slot of {self.slot_bits} bits (precision_bits={self.precision_bits}, "
                f"bound={self.bound}, max_clients={self.max_clients}) does not fit in a "
                f"{self.key_bits}-bit key; expected slot_bits <= key_bits - 1"
            )

    @property
    def offset(self) -> int:
        """Return the shift that makes every encoding non-negative."""
        return math.ceil(self.bound * 2**self.precision_bits)

    @property
    def value_bits(self) -> int:
        """Return the bits one shifted encoding needs."""
        return (2 * self.offset).bit_length()

    @property
    def slot_bits(self) -> int:
        """Return the slot width: the bit length of the largest sum of ``max_clients`` encodings."""
        return (self.max_clients * 2 * self.offset).bit_length()

    @property
    def headroom_bits(self) -> int:
        """Return the bits a slot holds beyond one encoding, room for the carries of the sum."""
        return self.slot_bits - self.value_bits

    @property
    def slots(self) -> int:
        """Return how many values one plaintext holds."""
        return (self.key_bits - 1) // self.slot_bits

    def num_plaintexts(self, length: int) -> int:
        """Return how many plaintexts a vector of ``length`` values packs into."""
        return -(-length // self.slots)

    def check_clients(self, count: int) -> None:
        """Refuse a sum of ``count`` vectors that the headroom cannot hold.

        Raises:
            ConfigError: if ``count > max_clients``.
        """
        if count > self.max_clients:
            raise ConfigError(
                f"packing: a sum of {count} vectors would overflow {self.slot_bits}-bit slots sized "
                f"for max_clients={self.max_clients}; configure max_clients >= {count}"
            )

    def pack(self, x: np.ndarray | list[float]) -> list[int]:
        """Return the plaintext integers holding ``x``, value ``i`` in slot ``i % slots`` (lowest bits first).

        Raises:
            ProtocolError: if ``x`` is not a finite 1-D vector or a value exceeds ``bound``.
        """
        arr = _as_finite_vector(x)
        over = np.flatnonzero(np.abs(arr) > self.bound)
        if over.size:
            raise ProtocolError(
                f"vector[{int(over[0])}] = {arr[over[0]]:g} exceeds the packing bound "
                f"{self.bound}; clip first or configure a larger bound"
            )
        shifted = (np.rint(arr * 2.0**self.precision_bits).astype(np.int64) + self.offset).tolist()
        w, k = self.slot_bits, self.slots
        out = []
        for start in range(0, len(shifted), k):
            acc = 0
            for v in reversed(shifted[start : start + k]):
                acc = (acc << w) | v
            out.append(acc)
        return out

    def unpack(self, plaintexts: list[int], length: int, count: int) -> np.ndarray:
        """Return the float sum of ``count`` packed vectors of ``length`` values.

        Raises:
            ProtocolError: if ``plaintexts`` do not hold ``length`` values.
            ConfigError: if ``count`` exceeds ``max_clients``.
        """
        ints = self.unpack_ints(plaintexts, length, count)
        return np.asarray(ints, dtype=np.float64) * 2.0**-self.precision_bits

    def unpack_ints(self, plaintexts: list[int], length: int, count: int) -> list[int]:
        """Return the exact fixed-point sums ``sum_k round(x_k[i] * 2^f)`` of ``count`` packed vectors.

        Raises:
            ProtocolError: if ``plaintexts`` do not hold ``length`` values, or hold what no sum of ``count``
                vectors within ``bound`` holds: a slot above ``count * 2 * offset``, or bits beyond the
                last slot (a client encrypted a value beyond the bound, or garbage).
            ConfigError: if ``count`` exceeds ``max_clients``.
        """
        self.check_clients(count)
        if len(plaintexts) != self.num_plaintexts(length):
            raise ProtocolError(
                f"packed vector: expected {self.num_plaintexts(length)} plaintexts for "
                f"{length} values, got {len(plaintexts)}"
            )
        w, mask, shift = self.slot_bits, (1 << self.slot_bits) - 1, count * self.offset
        ints: list[int] = []
        for i, acc in enumerate(plaintexts):
            for _ in range(min(self.slots, length - i * self.slots)):
                ints.append((acc & mask) - shift)
                acc >>= w
                if ints[-1] > shift:
                    self._refuse(f"value {len(ints) - 1} sums to {ints[-1]} / 2^{self.precision_bits}", count)
            if acc:
                self._refuse(f"plaintext {i} holds {acc.bit_length()} bits beyond its last value", count)
        return ints

    def _refuse(self, what: str, count: int) -> None:
        raise ProtocolError(
            f"packed sum: {what}; expected each value within +-{count} x {self.offset} / "
            f"2^{self.precision_bits} (bound {self.bound:g} x total weight {count}) and nothing beyond the "
            "last: a client encrypted a value beyond the bound, or garbage"
        )
