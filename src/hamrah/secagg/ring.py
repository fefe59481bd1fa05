"""Fixed-point quantization of float vectors into Z_{2^k}, and the bit-packed wire form of ring vectors.

Bonawitz et al. 2017 (CCS), Section 3: inputs are integer vectors in Z_R and the sum is taken mod R.
Here R = 2^k, so the ring arithmetic is numpy's wrapping unsigned arithmetic in the smallest dtype
holding k bits, reduced mod 2^k once at the end. A float x is clipped to [-c, c] and mapped to the
integer round((x + c) / (2c) * (2^b - 1)) in [0, 2^b - 1]; the sum of n such integers fits in the
ring when n (2^b - 1) < 2^k (checked by ``SecAggConfig``).
"""

from __future__ import annotations

import numpy as np

from hamrah.core.errors import ProtocolError


def ring_dtype(bits: int) -> np.dtype:
    """Return the smallest unsigned dtype holding ``bits`` bits (wrapping arithmetic is then mod 2^its width)."""
    for dtype in (np.uint8, np.uint16, np.uint32, np.uint64):
        if bits <= np.dtype(dtype).itemsize * 8:
            return np.dtype(dtype)
    raise ValueError(f"ring_bits must be at most 64, got {bits}")


def reduce(values: np.ndarray, bits: int) -> np.ndarray:
    """Return ``values mod 2^bits`` in place-safe form (a new array)."""
    return values & values.dtype.type((1 << bits) - 1) if bits < values.dtype.itemsize * 8 else values.copy()


def quantize(x: np.ndarray, clip: float, input_bits: int, dtype: np.dtype) -> np.ndarray:
    """Map floats clipped to [-clip, clip] onto the integers 0 .. 2^input_bits - 1 (round to nearest).

    Returns:
        An array of ``dtype``; the rounding error is at most clip / (2^input_bits - 1) per entry.
    """
    levels = (1 << input_bits) - 1
    scaled = (np.clip(np.asarray(x, dtype=np.float64), -clip, clip) + clip) * (levels / (2.0 * clip))
    return np.rint(scaled).astype(dtype)


def dequantize_sum(total: np.ndarray, count: int, clip: float, input_bits: int) -> np.ndarray:
    """Return the float sum of ``count`` clients from the ring sum of their quantized inputs."""
    levels = (1 << input_bits) - 1
    return total.astype(np.float64) * (2.0 * clip / levels) - count * clip


def pack(values: np.ndarray, bits: int) -> bytes:
    """Return the low ``bits`` bits of each value, concatenated little-endian (ceil(len * bits / 8) bytes)."""
    values = np.ascontiguousarray(values, dtype=values.dtype.newbyteorder("<"))
    if bits == values.dtype.itemsize * 8:
        return values.tobytes()
    if bits <= _FAST_BITS and len(values):
        return _pack_words(values.astype(np.uint64), bits)
    unpacked = np.unpackbits(values.view(np.uint8).reshape(len(values), -1), axis=1, bitorder="little")
    return np.packbits(unpacked[:, :bits], bitorder="little").tobytes()


_FAST_BITS = 57  # a value plus its bit shift within a byte fits one 64-bit word


def _pack_words(values: np.ndarray, bits: int) -> bytes:
    """Pack into 64-bit words: each value's low part ORs into the word its first bit falls in (values
    starting in one word are OR-reduced together), its high part into the next word when it spills."""
    offsets = np.arange(len(values), dtype=np.uint64) * np.uint64(bits)
    word, shift = offsets >> np.uint64(6), offsets & np.uint64(63)
    words = np.zeros(int(word[-1]) + 2, dtype=np.uint64)
    starts = np.flatnonzero(np.r_[True, word[1:] != word[:-1]])
    words[word[starts]] = np.bitwise_or.reduceat(values << shift, starts)
    # The part past the word's end, v >> (64 - s), written as two shifts so that s = 0 gives 0.
    spill = (values >> np.uint64(1)) >> (np.uint64(63) - shift)
    words[word[starts] + np.uint64(1)] |= np.bitwise_or.reduceat(spill, starts)
    return words.astype("<u8").tobytes()[: packed_size(len(values), bits)]


def packed_size(length: int, bits: int) -> int:
    """Return the bytes :func:`pack` makes of ``length`` values of ``bits`` bits."""
    return (length * bits + 7) // 8


def unpack(data: bytes, bits: int, length: int) -> np.ndarray:
    """Invert :func:`pack`: ``length`` values of ``bits`` bits, as the ring dtype.

    Raises:
        ProtocolError: ``data`` does not hold exactly ``length`` packed values.
    """
    dtype = ring_dtype(bits)
    if len(data) != packed_size(length, bits):
        raise ProtocolError(
            f"masked input of {length} {bits}-bit values needs {packed_size(length, bits)} bytes, got {len(data)}"
        )
    if bits == dtype.itemsize * 8:
        return np.frombuffer(data, dtype=dtype.newbyteorder("<")).astype(dtype)
    if bits <= _FAST_BITS and length:
        # Read the unaligned 64-bit word at each value's first byte, shift and mask.
        padded = np.frombuffer(data + bytes(8), dtype=np.uint8)
        words = np.ndarray((len(padded) - 7,), dtype="<u8", buffer=padded, strides=(1,))
        offsets = np.arange(length, dtype=np.int64) * bits
        picked = words[offsets >> 3] >> (offsets & 7).astype(np.uint64)
        return (picked & np.uint64((1 << bits) - 1)).astype(dtype)
    flat = np.unpackbits(np.frombuffer(data, dtype=np.uint8), bitorder="little", count=length * bits)
    padded = np.zeros((length, dtype.itemsize * 8), dtype=np.uint8)
    padded[:, :bits] = flat.reshape(length, bits)
    return np.packbits(padded, axis=1, bitorder="little").reshape(-1).view(dtype.newbyteorder("<")).astype(dtype)
