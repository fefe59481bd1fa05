"""Named tensors on the wire: safetensors bytes, cut into chunks, checked against what was expected.

safetensors is used rather than pickle (``torch.save``) because loading it cannot run code: a
malicious update is at worst refused, never executed.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from hamrah.core.errors import ProtocolError
from hamrah.core.params import Params
from hamrah.core.updates import check_update as core_check_update

# Names of the extra tensors beside the model's: the algorithm's broadcast in a checkpoint (SCAFFOLD's
# c) and the client's state change in an update (SCAFFOLD's delta c_i).
BROADCAST_PREFIX, AUX_PREFIX = "broadcast/", "aux/"
CHUNK_BYTES = 1 << 20  # per gRPC message: under gRPC's 4 MiB default


def encode_params(params: Mapping[str, torch.Tensor]) -> bytes:
    """Return ``params`` as safetensors bytes (contiguous CPU tensors, names sorted)."""
    return st_save({k: params[k].detach().to("cpu").contiguous() for k in sorted(params)})


def decode_params(data: bytes, what: str = "update") -> Params:
    """Parse safetensors bytes.

    Raises:
        ProtocolError: the bytes are not a valid safetensors payload.
    """
    try:
        return dict(st_load(data if isinstance(data, bytes) else bytes(data)))
    except (SafetensorError, ValueError, RuntimeError, OverflowError) as e:
        raise ProtocolError(f"{what}: not a valid safetensors payload ({e})") from None


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def chunks(data: bytes, size: int = CHUNK_BYTES) -> Iterator[bytes]:
    """Yield ``data`` in pieces of at most ``size`` bytes (one empty piece for empty data)."""
    if not data:
        yield b""
    for i in range(0, len(data), size):
        yield data[i : i + size]


def join_chunks(parts_in: Iterable[bytes], expected: int, limit: int, what: str = "update") -> bytes:
    """Concatenate streamed pieces, refusing more than ``limit`` bytes or a total other than ``expected``.

    Raises:
        ProtocolError: the stream is over the size limit or its length differs from the header's.
    """
    if expected > limit:
        raise ProtocolError(f"{what}: announced {expected:,} bytes, over the limit of {limit:,}")
    parts, size = [], 0
    for part in parts_in:
        parts.append(part)
        size += len(part)
        if size > limit:
            raise ProtocolError(f"{what}: stream exceeds the limit of {limit:,} bytes")
    if size != expected:
        raise ProtocolError(f"{what}: received {size:,} bytes, the header announced {expected:,}")
    return b"".join(parts)


@dataclass(frozen=True)
class TensorSpec:
    shape: tuple[int, ...]
    dtype: torch.dtype


def spec_of(params: Mapping[str, torch.Tensor]) -> dict[str, TensorSpec]:
    """Return the name -> (shape, dtype) an update must match."""
    return {k: TensorSpec(tuple(v.shape), v.dtype) for k, v in params.items()}


def check_update(update: Mapping[str, torch.Tensor], spec: Mapping[str, TensorSpec], what: str = "update") -> None:
    """Check names, shapes, dtypes and finiteness of ``update`` against ``spec``.

    Raises:
        ProtocolError: naming the first parameter that does not match and what was expected.
    """
    missing, extra = sorted(set(spec) - set(update)), sorted(set(update) - set(spec))
    if missing or extra:
        raise ProtocolError(f"{what}: parameter names differ (missing {_few(missing)}, unexpected {_few(extra)})")
    for name, s in spec.items():
        t = update[name]
        if tuple(t.shape) != s.shape:
            raise ProtocolError(f"{what}: {name} has shape {tuple(t.shape)}, expected {s.shape}")
        if t.dtype != s.dtype:
            raise ProtocolError(f"{what}: {name} has dtype {t.dtype}, expected {s.dtype}")
    core_check_update(update, what=what)  # finiteness: the same check the simulator runs (hamrah.core.updates)


def _json(data: bytes, what: str):
    """Parse UTF-8 JSON, any failure a ProtocolError (an integer of over 4,300 digits is a ValueError,
    100,000 nested arrays a RecursionError)."""
    try:
        return json.loads(bytes(data).decode("utf-8"))
    except RecursionError:
        raise ProtocolError(f"{what}: nested too deeply; expected a flat JSON object of numbers") from None
    except (UnicodeDecodeError, ValueError) as e:
        raise ProtocolError(f"{what}: not a JSON object ({type(e).__name__}: {str(e)[:80]})") from None


def finite_number(v) -> float | None:
    """``v`` as a finite float, or None: a bool, a string, an object, NaN, an infinity or an integer too
    large for a float (``math.isfinite(10**400)`` raises OverflowError) is not one."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    try:
        f = float(v)
    except OverflowError:
        return None
    return f if math.isfinite(f) else None


def _few(names: list[str], n: int = 5) -> str:
    """At most ``n`` names, each cut short (a refusal's message stays short, whatever was sent)."""
    shown = [_shown(k) for k in names[:n]]
    return f"[{', '.join(shown)}{f', ... {len(names) - n} more' if len(names) > n else ''}]"


def _shown(v) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def decode_metrics(data: bytes) -> dict[str, float]:
    """Parse a JSON object of finite numbers.

    Raises:
        ProtocolError: not UTF-8 JSON, not an object, or a value that is not a finite number (nothing else
            is raised, whatever the bytes).
    """
    if not data:
        return {}
    obj = _json(data, "metrics")
    if not isinstance(obj, dict):
        raise ProtocolError(f"metrics: expected a JSON object, got {type(obj).__name__}")
    out = {}
    for k, v in obj.items():
        f = finite_number(v)
        if f is None:
            raise ProtocolError(f"metrics: {_shown(k)} = {_shown(v)} is not a finite number")
        out[k] = f
    return out


MAX_TASK_METRICS, MAX_BINS = 32, 100_000  # a task metrics message: at most this many metrics, histogram bins


def encode_task_metrics(metrics) -> bytes:
    """Return a task's metrics (``dict[str, Metric]``) as UTF-8 JSON that keeps each one's reduction, so the
    server merges devices' evaluations exactly as the simulator merges clients' (``merge_metrics``)."""
    from hamrah.core.metrics import Perplexity, ScoreHistogram, Summed

    out: dict = {}
    for name, m in metrics.items():
        if isinstance(m, ScoreHistogram):
            out[name] = {"kind": "histogram", "pos": list(m.pos), "neg": list(m.neg)}
        elif isinstance(m, Summed):
            out[name] = {"kind": "summed", "total": float(m.total)}
        else:
            kind = "perplexity" if isinstance(m, Perplexity) else "weighted"
            out[name] = {"kind": kind, "total": float(m.total), "weight": float(m.weight)}
    return json.dumps(out, sort_keys=True).encode("utf-8")


def decode_task_metrics(data: bytes) -> dict:
    """Parse :func:`encode_task_metrics`'s JSON back into ``dict[str, Metric]``.

    Raises:
        ProtocolError: not a JSON object of known metric kinds with finite numbers (weights and counts
            not negative), too many metrics or bins.
    """
    from hamrah.core.metrics import Perplexity, ScoreHistogram, Summed, Weighted

    if not data:
        return {}
    obj = _json(data, "task metrics")
    if not isinstance(obj, dict) or len(obj) > MAX_TASK_METRICS:
        raise ProtocolError(f"task metrics: expected a JSON object of at most {MAX_TASK_METRICS} metrics")

    def number(v, what: str, low: float = -math.inf) -> float:
        f = finite_number(v)
        if f is None or f < low:
            raise ProtocolError(f"task metrics: {what} = {_shown(v)}, expected a finite number >= {low}")
        return f

    out: dict = {}
    for name, m in obj.items():
        label = name if len(name) <= 40 else name[:37] + "..."
        kind = m.get("kind") if isinstance(m, dict) else None
        if kind == "histogram":
            pos, neg = m.get("pos"), m.get("neg")
            if not (isinstance(pos, list) and isinstance(neg, list) and 0 < len(pos) == len(neg) <= MAX_BINS):
                raise ProtocolError(f"task metrics: {_shown(name)}: expected pos and neg of equal length 1..{MAX_BINS}")
            out[name] = ScoreHistogram(
                tuple(number(v, f"{label}.pos", 0.0) for v in pos), tuple(number(v, f"{label}.neg", 0.0) for v in neg)
            )
        elif kind == "summed":
            out[name] = Summed(number(m.get("total"), f"{label}.total"))
        elif kind in ("weighted", "perplexity"):
            cls = Perplexity if kind == "perplexity" else Weighted
            out[name] = cls(number(m.get("total"), f"{label}.total"), number(m.get("weight"), f"{label}.weight", 0.0))
        else:
            raise ProtocolError(f"task metrics: {label}: expected kind weighted, summed, perplexity or histogram")
    return out
