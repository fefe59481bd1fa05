"""Model updates under secure aggregation: named tensors to one vector and back, and a weighted mean.

FedAvg (McMahan et al. 2017) needs sum_k n_k delta_k / sum_k n_k over the clients that made it, and
under secure aggregation the server learns only sums, over the clients that survived to the masked
input round. So each client sends one vector ``[w_k * delta_k, w_k * clip]`` with w_k = n_k / W for a
public scale W >= max n_k (entries stay in the clipping range); the server divides the sum of the
first part by the sum of the last entry / clip. The denominator counts exactly the contributors, so
drop-outs change the mean's support, never its weighting.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import torch

from hamrah.core.errors import ConfigError, DataError
from hamrah.core.params import Params
from hamrah.secagg.config import SecAggConfig
from hamrah.secagg.driver import SecAggRun, run_secure_aggregation


@dataclass(frozen=True)
class ParamsLayout:
    """Names, shapes and dtypes of flattened parameters, in order."""

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    dtypes: tuple[torch.dtype, ...]

    @property
    def size(self) -> int:
        """Total number of scalars."""
        return sum(math.prod(s) for s in self.shapes)


def flatten_params(params: Mapping[str, torch.Tensor]) -> tuple[np.ndarray, ParamsLayout]:
    """Concatenate ``params`` (in key order) into one float64 vector; return it with its layout."""
    names = tuple(params)
    layout = ParamsLayout(names, tuple(tuple(params[k].shape) for k in names), tuple(params[k].dtype for k in names))
    if not names:
        return np.zeros(0), layout
    return np.concatenate([params[k].detach().cpu().double().reshape(-1).numpy() for k in names]), layout


def wire_layout(spec: Sequence[tuple[str, Sequence[int]]]) -> ParamsLayout:
    """Return the layout a device and the server both flatten a wire spec's ``(name, shape)`` pairs in:
    names sorted, float32."""
    pairs = sorted((str(n), tuple(int(d) for d in s)) for n, s in spec)
    return ParamsLayout(tuple(n for n, _ in pairs), tuple(s for _, s in pairs), tuple(torch.float32 for _ in pairs))


def unflatten_params(vector: np.ndarray, layout: ParamsLayout) -> Params:
    """Split ``vector`` back into named tensors of ``layout``'s shapes and dtypes.

    Raises:
        DataError: the vector's length is not ``layout.size``.
    """
    if vector.shape != (layout.size,):
        raise DataError(f"vector of shape {vector.shape} does not fit a layout of {layout.size} scalars")
    out, pos = {}, 0
    for name, shape, dtype in zip(layout.names, layout.shapes, layout.dtypes):
        size = math.prod(shape)
        out[name] = torch.from_numpy(np.array(vector[pos:pos + size])).reshape(shape).to(dtype)
        pos += size
    return out


def secure_weighted_mean(deltas: Sequence[Mapping[str, torch.Tensor]], num_examples: Sequence[int],
                         config: SecAggConfig, *, weight_scale: float | None = None,
                         dropouts: Mapping[str, set[int]] | None = None, seed: int = 0) -> tuple[Params, SecAggRun]:
    """Return sum_k n_k delta_k / sum_k n_k over the contributors, computed under secure aggregation.

    Args:
        deltas: one update per client, all with the same names and shapes.
        num_examples: n_k per client (> 0).
        config: must have ``vector_length = layout.size + 1`` (the extra entry carries the weight).
        weight_scale: W >= max n_k, public; default max n_k.
        dropouts, seed: as in :func:`run_secure_aggregation`.

    Returns:
        The weighted mean as named tensors, and the run's costs.

    Raises:
        ConfigError: the config's vector length does not fit, or weights are not positive.
    """
    flats = [flatten_params(d) for d in deltas]
    layout = flats[0][1]
    if config.vector_length != layout.size + 1:
        raise ConfigError(f"config.vector_length must be {layout.size + 1} (parameters + 1 weight), "
                          f"got {config.vector_length}")
    if any(k <= 0 for k in num_examples):
        raise ConfigError("num_examples must all be > 0")
    scale = float(weight_scale or max(num_examples))
    inputs = [np.append(flat * (k / scale), config.clip * k / scale) for (flat, _), k in zip(flats, num_examples)]
    run = run_secure_aggregation(inputs, config, dropouts, seed)
    total = run.sum
    return unflatten_params(total[:-1] / (total[-1] / config.clip), layout), run
