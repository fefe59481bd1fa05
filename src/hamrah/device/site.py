"""What a device checks and splits before it trains: its store against the plan (every device), and
a cross-silo site's held-out examples (fixed for the run)."""

from __future__ import annotations

import torch

from hamrah.core.errors import DataError
from hamrah.core.seeds import Stream, stream_rng
from hamrah.data.federated import ArrayData
from hamrah.transport.plan import Plan


def check_store(data: ArrayData, plan: Plan) -> None:
    """Check that the store's examples fit the plan's model.

    Raises:
        DataError: no examples, inputs of another shape, or labels outside the model's classes; naming
            what the store holds and what the plan expects.
    """
    spec = plan.model
    if len(data) == 0:
        raise DataError("the example store holds no examples (or all have expired); expected at least one example")
    shape = tuple(data.x.shape[1:])
    if shape != tuple(spec.input_shape):
        raise DataError(
            f"the example store's inputs have shape {shape}; the plan's model {spec.name!r} expects {spec.input_shape}"
        )
    y = data.y if plan.ignore_index is None else data.y[data.y != plan.ignore_index]
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= spec.num_classes):
        raise DataError(
            f"the example store's labels span {int(y.min())}..{int(y.max())}; the plan's model has "
            f"{spec.num_classes} classes (expected labels 0..{spec.num_classes - 1})"
        )


def holdout(data: ArrayData, fraction: float, seed: int, client_key: int) -> tuple[ArrayData, ArrayData]:
    """Split a site's ``n >= 2`` examples into (held out, training): ``fraction`` of them (at least one,
    and at least one left to train on), chosen by the run's seed and the site's client key, the same
    every round."""
    n = len(data)
    k = min(max(int(fraction * n), 1), n - 1)
    perm = torch.from_numpy(stream_rng(seed, Stream.HOLDOUT, client_key).permutation(n))
    held, rest = perm[:k].sort().values, perm[k:].sort().values
    return ArrayData(data.x[held], data.y[held]), ArrayData(data.x[rest], data.y[rest])


__all__ = ["check_store", "holdout"]
