"""hamrah's wire format for pipeline payloads: a header (magic, codec tag, names and shapes) then
little-endian fields, with exact byte counts (:class:`WireWriter`, :class:`WireReader`,
:class:`DensePayload`, the float32 baseline every codec is measured against)."""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from hamrah.core.errors import ProtocolError
from hamrah.core.params import Params

Spec = tuple[tuple[str, tuple[int, ...]], ...]  # names and shapes, in order: what both sides agree on
_MAGIC = b"HMR\x01"


def spec_of(params: Mapping[str, torch.Tensor]) -> Spec:
    """Return the (name, shape) list that a payload of ``params`` must match."""
    return tuple((k, tuple(int(d) for d in v.shape)) for k, v in params.items())


def header_nbytes(spec: Spec) -> int:
    """Return the size of the wire header (magic, codec tag, names and shapes) for ``spec``."""
    return 4 + 4 + 2 + sum(2 + len(n.encode()) + 1 + 4 * len(s) for n, s in spec)


class WireWriter:
    """Build a payload's bytes: header (magic, 4-byte codec tag, spec) then little-endian fields."""

    def __init__(self, tag: bytes, spec: Spec):
        self._parts = [_MAGIC, tag, struct.pack("<H", len(spec))]
        for name, shape in spec:
            raw = name.encode()
            self._parts += [struct.pack("<HB", len(raw), len(shape)), raw, struct.pack(f"<{len(shape)}I", *shape)]

    def pack(self, fmt: str, *values: Any) -> None:
        """Append ``values`` packed with struct format ``fmt`` (little-endian)."""
        self._parts.append(struct.pack("<" + fmt, *values))

    def raw(self, data: bytes) -> None:
        """Append raw bytes."""
        self._parts.append(bytes(data))

    def getvalue(self) -> bytes:
        """Return the bytes written so far."""
        return b"".join(self._parts)


class WireReader:
    """Parse bytes written by :class:`WireWriter`, checking the header against the expected spec.

    Raises:
        ProtocolError: wrong magic, codec tag or spec, truncated fields, or trailing bytes.
    """

    def __init__(self, data: bytes, tag: bytes, spec: Spec | None = None):
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise ProtocolError(f"payload: expected bytes, got {type(data).__name__}")
        self._data, self._pos = memoryview(bytes(data)), 0
        if self.raw(4) != _MAGIC:
            raise ProtocolError(f"payload magic: expected {_MAGIC!r} (hamrah wire format version 1)")
        got = self.raw(4)
        if got != tag:
            raise ProtocolError(f"payload codec tag: expected {tag!r}, got {got!r}")
        (count,) = self.unpack("H")
        entries = []
        for _ in range(count):
            n, ndim = self.unpack("HB")
            try:
                name = self.raw(n).decode()
            except UnicodeDecodeError as exc:
                raise ProtocolError("payload tensor name: expected UTF-8") from exc
            entries.append((name, tuple(self.unpack(f"{ndim}I"))))
        self.spec: Spec = tuple(entries)
        if spec is not None and self.spec != tuple(spec):
            raise ProtocolError(f"payload names/shapes: expected {list(spec)}, got {list(self.spec)}")

    def raw(self, n: int) -> bytes:
        """Return the next ``n`` bytes."""
        if n < 0 or self._pos + n > len(self._data):
            raise ProtocolError(
                f"payload truncated: needed {n} bytes at offset {self._pos}, {len(self._data) - self._pos} left"
            )
        out = self._data[self._pos : self._pos + n].tobytes()
        self._pos += n
        return out

    def unpack(self, fmt: str) -> tuple[Any, ...]:
        """Return the next fields, struct format ``fmt`` (little-endian)."""
        return struct.unpack("<" + fmt, self.raw(struct.calcsize("<" + fmt)))

    def finish(self) -> None:
        """Raise ProtocolError if bytes are left over."""
        if self._pos != len(self._data):
            raise ProtocolError(f"payload has {len(self._data) - self._pos} trailing bytes after offset {self._pos}")


class Payload(Protocol):
    """What a stage's client half produces: knows its exact wire size and its bytes."""

    @property
    def nbytes(self) -> int: ...

    def to_bytes(self) -> bytes: ...


@dataclass(frozen=True)
class DensePayload:
    """An update sent as float32, unchanged: the baseline every codec is measured against."""

    params: Params

    @property
    def nbytes(self) -> int:
        return header_nbytes(spec_of(self.params)) + 4 * sum(v.numel() for v in self.params.values())

    def to_bytes(self) -> bytes:
        w = WireWriter(b"DENS", spec_of(self.params))
        for v in self.params.values():
            w.raw(v.detach().to(torch.float32).contiguous().numpy().astype("<f4", copy=False).tobytes())
        return w.getvalue()


__all__ = ["DensePayload", "Payload", "Spec", "WireReader", "WireWriter", "header_nbytes", "spec_of"]
