"""A party's model as named arrays (``model.npz``, checkpoints; no pickle), and the one lookup that
names what is missing from such a file."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from hamrah.core.errors import DataError
from hamrah.core.files import write_atomic


def need(arrays: Mapping[str, np.ndarray], key: str, what: str) -> np.ndarray:
    """Return ``arrays[key]``, or refuse ``arrays`` as not being ``what``.

    Raises:
        DataError: naming the missing array and what was expected.
    """
    if key not in arrays:
        raise DataError(
            f"model: no array {key!r}, so not a {what} (expected the model.npz or checkpoint `hamrah party` "
            "wrote for this protocol and role)"
        )
    return np.asarray(arrays[key])


def model_arrays(value, prefix: str = "") -> dict[str, np.ndarray]:
    """Flatten a trained model into named arrays for ``model.npz`` (no pickle).

    Dataclass fields become ``name.``-prefixed keys, networks their ``state_dict`` tensors, tuples of
    models one key per index, a mapping of arrays its keys, and arrays, numbers and names are kept as
    they are (names as text arrays).

    Args:
        value: a role's result (SecureBoost, SplitNN or FTL model, or anything built of the above).
        prefix: the key prefix of ``value``'s arrays.

    Returns:
        ``{key: array}``, every array of a plain (non-object) dtype.
    """
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out = {}
        for f in dataclasses.fields(value):
            out.update(model_arrays(getattr(value, f.name), f"{prefix}{f.name}."))
        return out
    if isinstance(value, Mapping):
        return {f"{prefix}{k}": np.asarray(v) for k, v in value.items()}
    if hasattr(value, "state_dict"):
        return {f"{prefix}{k}": v.detach().cpu().numpy() for k, v in value.state_dict().items()}
    if isinstance(value, (tuple, list)) and any(dataclasses.is_dataclass(v) or hasattr(v, "state_dict") for v in value):
        out = {}
        for i, v in enumerate(value):
            out.update(model_arrays(v, f"{prefix}{i}."))
        return out
    arr = np.asarray(value)
    return {prefix.rstrip("."): arr.astype(str) if arr.dtype == object else arr}


def settings_json(settings) -> str:
    """Return a protocol's settings as canonical JSON (saved with a model, compared before scoring)."""
    return json.dumps(dataclasses.asdict(settings), sort_keys=True)


def model_file(
    result, protocol: str, settings, feature_names: Sequence[str] | None = None
) -> dict[str, np.ndarray] | None:
    """Return what ``model.npz`` holds for a role's result: its model's arrays (vertical LR: weights and
    feature transform), the protocol, its settings and the party's column names; ``None`` for a result
    without a model (PSI's ids, an arbiter's state).
    """
    from hamrah.vertical.lr_common import LRState

    if isinstance(result, LRState):
        if not result.weights.size:  # the arbiter's
            return None
        arrays = {k: getattr(result, k) for k in ("weights", "mean", "std", "quantiles")}
    elif result is None or isinstance(result, np.ndarray):
        return None
    else:
        arrays = model_arrays(result)
    arrays |= {"protocol": np.array(protocol), "settings": np.array(settings_json(settings))}
    if feature_names is not None:
        arrays["feature_names"] = np.array(feature_names, dtype=str)
    return arrays


def save_arrays(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """Write ``arrays`` to ``path`` (``.npz``, no pickle), all or nothing."""
    write_atomic(path, lambda f: np.savez(f, **arrays))


__all__ = ["model_arrays", "model_file", "need", "save_arrays", "settings_json"]
