"""A Hugging Face ``datasets`` data set saved with ``save_to_disk``, read offline with pyarrow.

The folder is read directly (``state.json``, ``dataset_info.json`` and the Arrow files it lists), so
neither the ``datasets`` library nor a network is needed, and nothing is ever downloaded. A
``DatasetDict`` folder (``dataset_dict.json``) holds one such folder per split. Features map to
fields: ``Value`` (numbers, booleans) and fixed-length ``List``/``Sequence``/``Array2D..5D`` keep
their dtype and shape, ``ClassLabel`` becomes an int64 field with the class names as categories,
``Value("string")`` a categorical field, and ``Image`` a float32 ``[C, H, W]`` field in [0, 1].
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from hamrah.core.errors import DataError
from hamrah.data.examples import Examples
from hamrah.data.images import ImageSpec, decode_image
from hamrah.data.schema import DTYPES, Field, Schema
from hamrah.data.tabular import require

_WIDEN = {"f": "float32", "i": "int64", "u": "int64", "b": "bool"}
_SUPPORTED = (
    "Value",
    "ClassLabel",
    "List",
    "Sequence",
    "LargeList",
    "Array2D",
    "Array3D",
    "Array4D",
    "Array5D",
    "Image",
)


def load_hf(
    path: str | os.PathLike,
    split: str | None = None,
    label: str | None = None,
    image_mode: str = "RGB",
    schema: Schema | None = None,
) -> Examples:
    """Load a ``save_to_disk`` folder of a Hugging Face ``datasets`` data set.

    Args:
        path: the folder ``save_to_disk`` wrote (a ``Dataset`` or a ``DatasetDict``).
        split: the split of a ``DatasetDict`` (e.g. ``"train"``).
        label: the label column (default: the only ``ClassLabel`` column, else ``label`` if present).
        image_mode: ``"RGB"`` or ``"L"`` for ``Image`` columns.
        schema: a schema to match (e.g. the train split's, for the test split): text columns are
            encoded with its categories, and the columns must match its fields.

    Returns:
        Examples with one field per column.

    Raises:
        DataError: not such a folder, an unknown split, a missing label column, a feature type
            without a fixed shape (variable-length lists, audio), or unreadable Arrow files.
    """
    root = Path(path)
    if (root / "dataset_dict.json").is_file():
        splits = _json(root / "dataset_dict.json").get("splits", [])
        if split not in splits:
            raise DataError(
                f"{root}: a DatasetDict with splits {', '.join(map(str, splits))}; "
                f"choose one with split= (got {split!r})"
            )
        root = root / split
    elif split is not None:
        raise DataError(f"{root}: one data set without splits, so split={split!r} does not apply")
    if not (root / "state.json").is_file():
        raise DataError(f"{root}: not a save_to_disk folder (expected state.json and dataset_info.json)")
    features = _json(root / "dataset_info.json").get("features") or {}
    table = _read_arrow(root, [f["filename"] for f in _json(root / "state.json").get("_data_files", [])])
    if label is None:
        class_cols = [k for k, f in features.items() if f.get("_type") == "ClassLabel"]
        label = class_cols[0] if len(class_cols) == 1 else ("label" if "label" in table.column_names else None)
    elif label not in table.column_names:
        raise DataError(f"{root}: no label column {label!r} (columns: {', '.join(table.column_names)})")
    fields, columns = [], {}
    for name in table.column_names:
        feature = features.get(name, {})
        field, columns[name] = _column(root, name, feature, table.column(name).to_pylist(), image_mode)
        fields.append(field)
        if schema is not None and field.categories is not None and feature.get("_type") != "ClassLabel":
            columns[name] = np.array([str(v) for v in table.column(name).to_pylist()], dtype=object)
    if schema is not None:
        return Examples(schema, columns, source=str(root))
    return Examples(Schema(tuple(fields), label), columns, source=str(root))


def _json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: cannot read ({e})") from None


def _read_arrow(root: Path, files: list[str]):
    pa = require("pyarrow", "data", f"{root}: reading a Hugging Face folder")
    if not files:
        raise DataError(f"{root}/state.json: lists no data files")
    tables = []
    for name in files:
        f = root / name
        try:
            with pa.memory_map(str(f)) as src:
                tables.append(pa.ipc.open_stream(src).read_all())
        except (OSError, pa.ArrowException) as e:
            raise DataError(f"{f}: cannot read the Arrow file ({e})") from None
    try:
        return pa.concat_tables(tables)
    except pa.ArrowException as e:
        raise DataError(f"{root}: its Arrow files do not share one schema ({e})") from None


def _column(root: Path, name: str, feature: dict, values: list, image_mode: str) -> tuple[Field, np.ndarray]:
    kind = feature.get("_type", "Value")
    where = f"{root}: column {name!r}"
    if kind not in _SUPPORTED:
        raise DataError(f"{where}: feature type {kind} is not supported (expected one of {', '.join(_SUPPORTED)})")
    if any(v is None for v in values):
        raise DataError(f"{where}: has missing values (expected a value in every row)")
    if kind == "ClassLabel":
        return Field(name, "int64", categories=tuple(feature["names"])), np.array(values, np.int64)
    if kind == "Image":
        spec = ImageSpec(mode=image_mode)
        pixels = [decode_image(_image_bytes(where, v), spec, f"{where}, row {i}") for i, v in enumerate(values)]
        if len({p.shape for p in pixels}) > 1:
            raise DataError(f"{where}: images of different sizes, expected one size (resize them before saving)")
        arr = np.stack(pixels) if pixels else np.zeros((0, 3 if image_mode == "RGB" else 1, 1, 1), np.float32)
        return Field(name, "float32", arr.shape[1:]), arr
    base = _base_dtype(feature)
    if base in ("string", "large_string"):
        cats = tuple(sorted({str(v) for v in values}))
        index = {c: i for i, c in enumerate(cats)}
        return Field(name, "int64", categories=cats), np.array([index[str(v)] for v in values], np.int64)
    try:
        arr = np.array(values, dtype=np.float64 if base is None else np.dtype(base.replace("large_", "")))
    except (ValueError, TypeError):
        raise DataError(f"{where}: rows of different lengths or types (expected one fixed shape)") from None
    dtype = arr.dtype.name if arr.dtype.name in DTYPES else _WIDEN.get(arr.dtype.kind)
    if dtype is None or arr.dtype == object:
        raise DataError(f"{where}: dtype {arr.dtype} is not supported (expected numbers or booleans)")
    return Field(name, dtype, arr.shape[1:]), arr.astype(dtype, copy=False)


def _base_dtype(feature: dict) -> str | None:
    while "dtype" not in feature and isinstance(feature.get("feature"), dict):
        feature = feature["feature"]
    return feature.get("dtype")


def _image_bytes(where: str, value) -> bytes:
    if isinstance(value, dict) and value.get("bytes"):
        return value["bytes"]
    p = value.get("path") if isinstance(value, dict) else None
    if p and Path(p).is_file():
        return Path(p).read_bytes()
    raise DataError(f"{where}: an image with neither bytes nor a readable path ({p!r})")
