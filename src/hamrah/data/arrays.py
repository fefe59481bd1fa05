"""NumPy ``.npz`` archives as examples: each array is a field, aligned on the first dimension.

Keys ending in ``_<split>`` (``x_train``, ``y_test``, Keras style) are one split's fields. A text
array becomes a categorical field (sorted vocabulary). Archives are opened with
``allow_pickle=False``: an object array is refused, never unpickled.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np

from hamrah.core.errors import DataError
from hamrah.data.examples import Examples
from hamrah.data.schema import DTYPES, Field, Schema

_WIDEN = {"f": "float32", "i": "int64", "u": "int64", "b": "bool"}


def load_npz(
    path: str | os.PathLike,
    label: str | None = None,
    split: str | None = None,
    client: str | None = None,
    schema: Schema | None = None,
) -> Examples:
    """Load a ``.npz`` archive.

    Args:
        path: the archive.
        label: the label array's key (default: ``y``, else ``label``, else none).
        split: take the arrays ``<name>_<split>`` (e.g. ``"train"``), without the suffix.
        client: the key of an array of client ids (the natural partition); not a field.
        schema: a schema to match (a task's): its fields are the arrays, its categories encode
            text arrays.

    Returns:
        Examples with one field per array (float64/float32/int64/int32/uint8/bool kept, other
        numbers widened, text made categorical).

    Raises:
        DataError: the file is missing or not an npz archive, an array is an object array or of an
            unsupported dtype, the label/client/split keys do not exist, or arrays differ in length.
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise DataError(f"{path}: not a readable .npz archive without pickled objects ({e})") from None
    arrays = _select_split(path, arrays, split)
    groups, group_names = None, None
    if client is not None:
        if client not in arrays:
            raise DataError(f"{path}: no client-id array {client!r} (arrays: {', '.join(arrays)})")
        names, ids = np.unique(arrays.pop(client).astype(str), return_inverse=True)
        groups, group_names = ids.astype(np.int64), tuple(str(n) for n in names)
    if label is None:
        label = next((k for k in ("y", "label") if k in arrays), None)
    elif label not in arrays:
        raise DataError(f"{path}: no label array {label!r} (arrays: {', '.join(arrays)})")
    if not arrays:
        raise DataError(f"{path}: no arrays")
    sizes = {k: (len(v) if v.ndim else 0) for k, v in arrays.items()}
    n = sizes.get(label, next(iter(sizes.values())))
    bad = next((k for k, s in sizes.items() if s != n), None)
    if bad is not None:
        raise DataError(f"{path}: array {bad!r} has {sizes[bad]} rows, expected {n} like the others")
    if schema is not None:
        return Examples(schema, arrays, groups, group_names, str(path))
    fields, columns = [], {}
    for k, v in arrays.items():
        field, columns[k] = _field(path, k, v)
        fields.append(field)
    return Examples(Schema(tuple(fields), label), columns, groups, group_names, str(path))


def _select_split(path: Path, arrays: dict[str, np.ndarray], split: str | None) -> dict[str, np.ndarray]:
    suffixed = sorted({k.rsplit("_", 1)[1] for k in arrays if "_" in k})
    if split is None:
        return arrays
    chosen = {k[: -len(split) - 1]: v for k, v in arrays.items() if k.endswith("_" + split)}
    if not chosen:
        raise DataError(
            f"{path}: no arrays of split {split!r} (expected keys like x_{split}; "
            f"suffixes present: {', '.join(suffixed) or 'none'})"
        )
    return chosen


def _field(path: Path, key: str, v: np.ndarray) -> tuple[Field, np.ndarray]:
    if v.ndim == 0:
        raise DataError(f"{path}: array {key!r} is a scalar, expected one row per example")
    if v.dtype.kind in "US":
        if v.ndim != 1:
            raise DataError(f"{path}: text array {key!r} has shape {list(v.shape)}, expected one value per example")
        cats, codes = np.unique(v.astype(str), return_inverse=True)
        return Field(key, "int64", categories=tuple(str(c) for c in cats)), codes.astype(np.int64)
    dtype = v.dtype.name if v.dtype.name in DTYPES else _WIDEN.get(v.dtype.kind)
    if dtype is None:
        raise DataError(f"{path}: array {key!r} has dtype {v.dtype}, expected numbers, booleans or text")
    return Field(key, dtype, v.shape[1:]), v.astype(dtype, copy=False)
