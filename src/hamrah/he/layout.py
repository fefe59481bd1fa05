"""Flatten named parameters into one float vector for encryption, and back."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

from hamrah.core.errors import ProtocolError
from hamrah.core.params import Params


@dataclass(frozen=True)
class ParamsLayout:
    """The names, shapes and dtypes of a parameter set, in the order they are flattened.

    Example:
        >>> layout = ParamsLayout.of({"w": torch.zeros(2, 3), "b": torch.zeros(2)})
        >>> layout.size
        8
    """

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    dtypes: tuple[torch.dtype, ...]

    @classmethod
    def of(cls, params: Mapping[str, torch.Tensor]) -> ParamsLayout:
        """Return the layout of ``params`` in their iteration order."""
        return cls(tuple(params), tuple(tuple(v.shape) for v in params.values()),
                   tuple(v.dtype for v in params.values()))

    @property
    def size(self) -> int:
        """Return the number of scalars in the flattened vector."""
        return sum(math.prod(s) for s in self.shapes)

    def flatten(self, params: Mapping[str, torch.Tensor]) -> np.ndarray:
        """Return ``params`` concatenated into one float64 vector in layout order.

        Raises:
            ProtocolError: if the names or shapes differ from the layout's.
        """
        if set(params) != set(self.names):
            raise ProtocolError(f"params: expected names {sorted(self.names)}, got {sorted(params)}")
        parts = []
        for name, shape in zip(self.names, self.shapes):
            tensor = params[name]
            if tuple(tensor.shape) != shape:
                raise ProtocolError(f"params[{name!r}]: expected shape {shape}, got {tuple(tensor.shape)}")
            parts.append(tensor.detach().cpu().reshape(-1).to(torch.float64).numpy())
        return np.concatenate(parts) if parts else np.zeros(0)

    def unflatten(self, vector: np.ndarray) -> Params:
        """Return the named tensors held by ``vector``, each in its layout dtype.

        Raises:
            ProtocolError: if ``vector`` does not hold exactly ``size`` values.
        """
        vec = np.asarray(vector)
        if vec.ndim != 1 or vec.size != self.size:
            raise ProtocolError(f"vector: expected {self.size} values, got shape {vec.shape}")
        out: Params = {}
        start = 0
        for name, shape, dtype in zip(self.names, self.shapes, self.dtypes):
            stop = start + math.prod(shape)
            out[name] = torch.from_numpy(np.array(vec[start:stop])).reshape(shape).to(dtype)
            start = stop
        return out


def flatten_params(params: Mapping[str, torch.Tensor]) -> tuple[np.ndarray, ParamsLayout]:
    """Return ``params`` as one float64 vector and the layout that restores it."""
    layout = ParamsLayout.of(params)
    return layout.flatten(params), layout


def unflatten_params(vector: np.ndarray, layout: ParamsLayout) -> Params:
    """Return the named tensors that ``layout`` reads from ``vector``.

    Raises:
        ProtocolError: if ``vector`` does not match the layout's size.
    """
    return layout.unflatten(vector)
