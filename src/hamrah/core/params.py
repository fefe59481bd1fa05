"""Named parameter arrays: the model state that travels between server and clients, and the one way
to flatten them into a vector and back (:class:`ParamsLayout`, used by secure aggregation, HE and the
robust aggregators)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from hamrah.core.errors import ProtocolError
from hamrah.core.seeds import init_seed

Params = dict[str, torch.Tensor]


@dataclass(frozen=True)
class ParamsLayout:
    """The names, shapes and dtypes of a parameter set, in the order they are flattened.

    Example:
        >>> layout = ParamsLayout.of({"w": torch.zeros(2, 3), "b": torch.zeros(2)})
        >>> layout.size
        8
        >>> layout.unflatten(layout.flatten({"w": torch.ones(2, 3), "b": torch.zeros(2)}))["w"].shape
        torch.Size([2, 3])
    """

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    dtypes: tuple[torch.dtype, ...]

    @classmethod
    def of(cls, params: Mapping[str, torch.Tensor]) -> ParamsLayout:
        """Return the layout of ``params`` in their iteration order."""
        return cls(
            tuple(params), tuple(tuple(v.shape) for v in params.values()), tuple(v.dtype for v in params.values())
        )

    @classmethod
    def of_spec(cls, spec: Sequence[tuple[str, Sequence[int]]], *, sort: bool = False) -> ParamsLayout:
        """Return the float32 layout of ``(name, shape)`` pairs (sorted by name if ``sort``)."""
        pairs = [(str(n), tuple(int(d) for d in s)) for n, s in spec]
        pairs = sorted(pairs) if sort else pairs
        return cls(tuple(n for n, _ in pairs), tuple(s for _, s in pairs), tuple(torch.float32 for _ in pairs))

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
            raise ProtocolError(
                f"vector of shape {vec.shape} does not fit a layout of {self.size} scalars: expected {self.size} values"
            )
        out: Params = {}
        start = 0
        for name, shape, dtype in zip(self.names, self.shapes, self.dtypes):
            stop = start + math.prod(shape)
            out[name] = torch.from_numpy(np.array(vec[start:stop])).reshape(shape).to(dtype)
            start = stop
        return out


def flatten_params(params: Mapping[str, torch.Tensor]) -> tuple[np.ndarray, ParamsLayout]:
    """Return ``params`` as one float64 vector (in key order) and the layout that restores it."""
    layout = ParamsLayout.of(params)
    return layout.flatten(params), layout


def unflatten_params(vector: np.ndarray, layout: ParamsLayout) -> Params:
    """Return the named tensors that ``layout`` reads from ``vector``.

    Raises:
        ProtocolError: if ``vector`` does not match the layout's size.
    """
    return layout.unflatten(vector)


def model_state(model: torch.nn.Module) -> Params:
    """Return what a round carries of ``model``: its parameters, then its floating-point buffers
    (BatchNorm's running mean and variance), as detached copies.

    The buffers travel and are combined like parameters: a client's delta includes how its local
    passes moved them, so FedAvg's example-weighted mean of deltas gives the example-weighted mean of
    the clients' buffers. Integer buffers (BatchNorm's ``num_batches_tracked``) stay on each model:
    they only count batches, and BatchNorm reads them only when its ``momentum`` is None.
    """
    out = {k: v.detach().clone() for k, v in model.named_parameters()}
    out.update({k: v.detach().clone() for k, v in model.named_buffers() if v.is_floating_point()})
    return out


def seeded(factory: Callable[[], torch.nn.Module], seed: int) -> torch.nn.Module:
    """Build a model with torch's generator seeded from ``seed`` (every driver's initial global model),
    leaving torch's global random state untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(init_seed(seed))
        return factory()


@torch.no_grad()
def load_state(model: torch.nn.Module, params: Mapping[str, torch.Tensor]) -> None:
    """Copy ``params`` into the model's parameters and floating-point buffers of the same names
    (names ``params`` lacks keep their values)."""
    for name, t in (*model.named_parameters(), *model.named_buffers()):
        if name in params and t.is_floating_point():
            t.copy_(params[name])


def clone(params: Mapping[str, torch.Tensor]) -> Params:
    """Return a detached copy of ``params``."""
    return {k: v.detach().clone() for k, v in params.items()}


def num_parameters(params: Mapping[str, torch.Tensor]) -> int:
    """Return the total number of scalars in ``params``."""
    return sum(v.numel() for v in params.values())


def stack(params: Mapping[str, torch.Tensor], copies: int) -> Params:
    """Return ``params`` repeated along a new leading dimension of size ``copies``."""
    return {k: v.detach().unsqueeze(0).repeat(copies, *([1] * v.dim())) for k, v in params.items()}


def unstack(stacked: Mapping[str, torch.Tensor], index: int) -> Params:
    """Return the ``index``-th slice of stacked parameters."""
    return {k: v[index] for k, v in stacked.items()}


def sub(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> Params:
    """Return ``a - b`` name by name."""
    return {k: a[k] - b[k] for k in a}


def max_abs_diff(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> float:
    """Return the largest absolute difference between two parameter sets."""
    return max(float((a[k].detach() - b[k].detach()).abs().max()) for k in a)
