"""The one wire format of messages between vertical-FL parties: named values, no pickle.

A message is a ``dict[str, Value]`` where a value is a numeric or boolean numpy array, ``bytes``,
``str``, ``int``, ``float``, ``bool`` or a tuple of non-negative Python ints (``BigInts``: Paillier
ciphertexts, encoded fixed-width big-endian). :func:`encode` turns it into bytes, :func:`decode`
back, refusing anything malformed, oversized or of a kind not listed with a :class:`ProtocolError`
that names the field. Layout: ``b"HVM1"``, a 4-byte little-endian header length, a JSON header
(tag and fields with their kind, dtype, shape, offset and length) and the raw field bytes.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from hamrah.core.errors import ProtocolError

MAGIC = b"HVM1"
MAX_HEADER = 1 << 20
DTYPES = frozenset(
    {"bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "float16", "float32", "float64"}
)
Value = "np.ndarray | bytes | str | int | float | bool | tuple[int, ...]"


@dataclass(frozen=True)
class Envelope:
    """A decoded message: its tag (what it is in the protocol) and its named values."""

    tag: str
    fields: dict


def _bigints(values: tuple, name: str) -> tuple[bytes, dict]:
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values):
        raise ProtocolError(f"field {name!r}: a tuple must hold non-negative ints (ciphertexts)")
    width = max((v.bit_length() + 7) // 8 for v in values) if values else 0
    body = b"".join(v.to_bytes(width, "big") for v in values)
    return body, {"kind": "bigints", "width": width, "count": len(values)}


def _field(name: str, value) -> tuple[bytes, dict]:
    if isinstance(value, np.ndarray):
        if value.dtype.name not in DTYPES:
            raise ProtocolError(f"field {name!r}: dtype {value.dtype} not allowed (expected one of {sorted(DTYPES)})")
        arr = np.asarray(value, order="C")
        return arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes(), {
            "kind": "array",
            "dtype": arr.dtype.name,
            "shape": list(arr.shape),
        }
    if isinstance(value, (bytes, bytearray)):
        return bytes(value), {"kind": "bytes"}
    if isinstance(value, str):
        return value.encode(), {"kind": "str"}
    if isinstance(value, bool):
        return b"", {"kind": "bool", "value": value}
    if isinstance(value, int):
        return str(value).encode(), {"kind": "int"}
    if isinstance(value, float):
        return struct.pack("<d", value), {"kind": "float"}
    if isinstance(value, tuple):
        return _bigints(value, name)
    raise ProtocolError(
        f"field {name!r}: cannot send a {type(value).__name__} (expected an array, bytes, str, "
        "int, float, bool or a tuple of ints)"
    )


def encode(tag: str, message: Mapping[str, object]) -> bytes:
    """Encode one message.

    Args:
        tag: what the message is in the protocol (checked by the receiver).
        message: named values (see the module docstring for the kinds).

    Returns:
        The bytes to send.

    Raises:
        ProtocolError: a value of a kind that cannot be sent.
    """
    parts, specs, offset = [], [], 0
    for name, value in message.items():
        body, spec = _field(str(name), value)
        specs.append({"name": str(name), "offset": offset, "length": len(body), **spec})
        parts.append(body)
        offset += len(body)
    header = json.dumps({"tag": tag, "fields": specs}, separators=(",", ":")).encode()
    return MAGIC + struct.pack("<I", len(header)) + header + b"".join(parts)


def _read_header(data: bytes) -> tuple[dict, int]:
    if len(data) < 8 or data[:4] != MAGIC:
        raise ProtocolError("message: expected the HVM1 magic and a header length")
    (size,) = struct.unpack("<I", data[4:8])
    if size > MAX_HEADER or 8 + size > len(data):
        raise ProtocolError(f"message header: length {size} exceeds the message or the {MAX_HEADER}-byte limit")
    try:
        header = json.loads(data[8 : 8 + size])
    except (ValueError, RecursionError) as e:
        raise ProtocolError(f"message header: expected JSON ({type(e).__name__})") from None
    if not (isinstance(header, dict) and isinstance(header.get("tag"), str) and isinstance(header.get("fields"), list)):
        raise ProtocolError("message header: expected an object with a string 'tag' and a list 'fields'")
    return header, 8 + size


def _int(spec: dict, key: str) -> int:
    v = spec.get(key)
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise ProtocolError(f"field {spec.get('name')!r}: {key} must be a non-negative integer, got {v!r}")
    return v


def _value(spec: dict, body: bytes):
    kind, name = spec.get("kind"), spec.get("name")
    if kind == "array":
        dtype, shape = spec.get("dtype"), spec.get("shape")
        if dtype not in DTYPES or not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
            raise ProtocolError(f"field {name!r}: expected an allowed dtype and a shape of non-negative ints")
        dt = np.dtype(dtype).newbyteorder("<")
        if int(np.prod(shape, dtype=np.int64)) * dt.itemsize != len(body):
            raise ProtocolError(f"field {name!r}: {len(body)} bytes do not hold a {dtype} array of shape {shape}")
        return np.frombuffer(body, dtype=dt).astype(dt.newbyteorder("="), copy=True).reshape(tuple(shape))
    if kind == "bytes":
        return body
    if kind == "str":
        try:
            return body.decode()
        except UnicodeDecodeError:
            raise ProtocolError(f"field {name!r}: expected UTF-8 text") from None
    if kind == "bool":
        if not isinstance(spec.get("value"), bool):
            raise ProtocolError(f"field {name!r}: expected a boolean value")
        return spec["value"]
    if kind == "int":
        if len(body) > 4300 or not body.lstrip(b"-").isdigit():
            raise ProtocolError(f"field {name!r}: expected a decimal integer")
        return int(body)
    if kind == "float":
        if len(body) != 8:
            raise ProtocolError(f"field {name!r}: expected an 8-byte float")
        return struct.unpack("<d", body)[0]
    if kind == "bigints":
        width, count = _int(spec, "width"), _int(spec, "count")
        if width * count != len(body):
            raise ProtocolError(f"field {name!r}: {len(body)} bytes do not hold {count} ints of {width} bytes")
        return (
            tuple(int.from_bytes(body[i : i + width], "big") for i in range(0, len(body), width))
            if width
            else (0,) * count
        )
    raise ProtocolError(f"field {name!r}: unknown kind {kind!r}")


def completed(value: object, where: str, limit: int) -> set[int]:
    """Return a peer's completed epochs (or trees) as a set: ``value`` must be an int64 vector of at
    most ``limit`` entries, each in 1..``limit`` (checkpoints are kept per settings, so an honest party's
    fit); else a :class:`ProtocolError` naming ``where`` (a huge list cost ~10 bytes of memory per byte)."""
    if not (isinstance(value, np.ndarray) and value.dtype == np.int64 and value.ndim == 1):
        raise ProtocolError(f"{where} (its completed epochs or trees) must be an int64 vector")
    if len(value) > limit or bool(np.any((value < 1) | (value > limit))):
        raise ProtocolError(
            f"{where} names {len(value)} epochs or trees, expected at most {limit} in 1..{limit} "
            "(its checkpoints of this run)"
        )
    return set(value.tolist())


def decode(data: bytes) -> Envelope:
    """Decode and validate one message.

    Raises:
        ProtocolError: the bytes are not a well-formed message; names the field at fault.
    """
    header, start = _read_header(data)
    fields, end = {}, start
    for spec in header["fields"]:
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            raise ProtocolError("message header: each field needs a string 'name'")
        if spec["name"] in fields:
            raise ProtocolError(f"field {spec['name']!r}: sent twice")
        offset, length = _int(spec, "offset"), _int(spec, "length")
        if start + offset + length > len(data):
            raise ProtocolError(f"field {spec['name']!r}: runs past the end of the message")
        fields[spec["name"]] = _value(spec, data[start + offset : start + offset + length])
        end = max(end, start + offset + length)
    if end != len(data):
        raise ProtocolError(f"message: {len(data) - end} trailing bytes after the last field")
    return Envelope(header["tag"], fields)
