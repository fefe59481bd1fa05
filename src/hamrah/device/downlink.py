"""What a device takes from its server, checked before it is used (a broken or hostile server must not
make a device spin, sleep for good, fill its memory or train on garbage): the reconnect delay, the
checkpoint stream (cut once past what the task announced) and the checkpoint against the plan's model."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from hamrah.core.errors import ProtocolError
from hamrah.core.params import Params, model_state
from hamrah.transport.codec import check_update, decode_params, join_chunks, sha256, spec_of

MIN_WAIT_S, MAX_WAIT_S = 0.05, 3600.0  # the shortest and longest reconnect delay a server's reply can set


def pace(wait: float, fallback: float) -> float:
    """Return the server's reconnect delay within [MIN_WAIT_S, MAX_WAIT_S], ``fallback`` when not finite
    (0 or less made a device check in thousands of times a second; NaN or 1e300 put it to sleep for good)."""
    return min(max(wait, MIN_WAIT_S), MAX_WAIT_S) if math.isfinite(wait) else fallback


async def download(call, expected: int, digest: str, limit: int) -> Params:
    """Read a DownloadCheckpoint stream of ``expected`` bytes (at most ``limit``) with sha256 ``digest``.

    Raises:
        ProtocolError: announced over the limit (nothing read), more bytes than announced (the stream is
            cancelled at once, not buffered to its end), fewer, another digest, or not safetensors.
    """
    if expected > limit:
        call.cancel()
        raise ProtocolError(f"checkpoint: announced {expected:,} bytes, over the limit of {limit:,}")
    parts, size = [], 0
    async for chunk in call:
        parts.append(chunk.data)
        size += len(chunk.data)
        if size > expected:
            call.cancel()
            raise ProtocolError(f"checkpoint: the stream exceeds the {expected:,} bytes the task announced")
    data = join_chunks(parts, expected, limit, what="checkpoint")
    if sha256(data) != digest:
        raise ProtocolError("checkpoint: sha256 differs from the task's")
    return decode_params(data, what="checkpoint")


def check_checkpoint(
    params: Params, model: torch.nn.Module | Callable[[], torch.nn.Module], broadcast: Params | None = None
) -> None:
    """Check the checkpoint against ``model`` (or the model a builder makes): the same names, shapes and
    dtypes, every value finite; so too the algorithm's broadcast, shaped like the model (SCAFFOLD's c, the
    only one: other names raised KeyError and stopped the device). A builder runs on torch's meta device
    (no memory), so a plan whose model is far larger than its checkpoint is refused before it is built.

    Raises:
        ProtocolError: naming the first tensor that differs and what was expected.
    """
    if not isinstance(model, torch.nn.Module):
        with torch.device("meta"):
            model = model()
    check_update(params, spec_of(model_state(model)), what="checkpoint")
    if broadcast:
        check_update(broadcast, spec_of(params), what="checkpoint's broadcast")


__all__ = ["MAX_WAIT_S", "MIN_WAIT_S", "check_checkpoint", "download", "pace"]
