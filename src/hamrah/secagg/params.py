"""Model updates under secure aggregation: named tensors to one vector and back (the one
:class:`~hamrah.core.params.ParamsLayout`), and a weighted mean.

FedAvg (McMahan et al. 2017) needs sum_k n_k delta_k / sum_k n_k over the clients that made it, and
under secure aggregation the server learns only sums, over the clients that survived to the masked
input round. So each client sends one vector ``[w_k * delta_k, w_k * clip]`` with w_k = n_k / W for a
public scale W >= max n_k (entries stay in the clipping range); the server divides the sum of the
first part by the sum of the last entry / clip. The denominator counts exactly the contributors, so
drop-outs change the mean's support, never its weighting.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from hamrah.core.errors import ConfigError
from hamrah.core.params import Params, ParamsLayout, flatten_params, unflatten_params
from hamrah.secagg.config import SecAggConfig
from hamrah.secagg.driver import SecAggRun, run_secure_aggregation


def wire_layout(spec: Sequence[tuple[str, Sequence[int]]]) -> ParamsLayout:
    """Return the layout a device and the server both flatten a wire spec's ``(name, shape)`` pairs in:
    names sorted, float32."""
    return ParamsLayout.of_spec(spec, sort=True)


def secure_weighted_mean(
    deltas: Sequence[Mapping[str, torch.Tensor]],
    num_examples: Sequence[int],
    config: SecAggConfig,
    *,
    weight_scale: float | None = None,
    dropouts: Mapping[str, set[int]] | None = None,
    seed: int = 0,
) -> tuple[Params, SecAggRun]:
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
        raise ConfigError(
            f"config.vector_length must be {layout.size + 1} (parameters + 1 weight), got {config.vector_length}"
        )
    if any(k <= 0 for k in num_examples):
        raise ConfigError("num_examples must all be > 0")
    scale = float(weight_scale or max(num_examples))
    inputs = [np.append(flat * (k / scale), config.clip * k / scale) for (flat, _), k in zip(flats, num_examples)]
    run = run_secure_aggregation(inputs, config, dropouts, seed)
    total = run.sum
    return unflatten_params(total[:-1] / (total[-1] / config.clip), layout), run


__all__ = ["ParamsLayout", "flatten_params", "secure_weighted_mean", "unflatten_params", "wire_layout"]
