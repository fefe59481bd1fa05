"""Flatten an algorithm's typed server state into named tensors + JSON scalars, and back.

A server checkpoints the tensors with safetensors and the scalars as JSON (this module does no I/O).
State classes are frozen dataclasses whose fields are ``Params`` (name -> tensor) or numbers.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

import torch

from hamrah.core.errors import ProtocolError

S = TypeVar("S")


def flatten_state(state: Any) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Return (tensors keyed ``field/param``, scalars keyed ``field``) of a state dataclass."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {"__type__": type(state).__name__}
    for f in dataclasses.fields(state):
        value = getattr(state, f.name)
        if isinstance(value, dict):
            tensors.update({f"{f.name}/{k}": v.detach().contiguous() for k, v in value.items()})
            scalars.setdefault("__params__", []).append(f.name)
        else:
            scalars[f.name] = value
    return tensors, scalars


def unflatten_state(cls: type[S], tensors: dict[str, torch.Tensor], scalars: dict[str, Any]) -> S:
    """Rebuild a ``cls`` state from :func:`flatten_state`'s output.

    Raises:
        ProtocolError: the checkpoint holds another state type.
    """
    if scalars.get("__type__") != cls.__name__:
        raise ProtocolError(f"server state checkpoint is a {scalars.get('__type__')!r}, expected {cls.__name__!r}")
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]  # S is a dataclass state type (checked by its use)
        if f.name in scalars.get("__params__", []):
            prefix = f.name + "/"
            values[f.name] = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        elif f.name in scalars:
            values[f.name] = scalars[f.name]
    return cls(**values)
