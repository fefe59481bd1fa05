"""The schema of a labelled data set: named fields, each with a dtype and a per-example shape.

A schema is what a task declares and what every loader, partitioner and Example Store checks
against: ``Schema((Field("age", "float32"), Field("image", "float32", (3, 32, 32)),
Field("diagnosis", "int64", categories=("benign", "malignant"))), label="diagnosis")``.

A field with ``categories`` holds int64 codes into that vocabulary (a categorical column, a class
label); text values are encoded through it, so two files or two devices always agree on the codes.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from hamrah.core.errors import DataError

DTYPES = ("float32", "float64", "int64", "int32", "uint8", "bool")
_ACCEPTS = {  # target dtype kind -> numpy kinds of input values it takes without losing meaning
    "f": "fiub",
    "i": "iub",
    "u": "iub",
    "b": "b",
}


@dataclass(frozen=True)
class Field:
    """One named field of every example.

    Attributes:
        name: the field's name (a column name, ``"image"``, ``"label"``).
        dtype: one of :data:`DTYPES`.
        shape: the shape of one example's value; ``()`` for a scalar.
        categories: for a categorical field: the vocabulary its int64 codes index, else None.

    Raises:
        DataError: an empty name, an unknown dtype, a non-positive dimension, or categories on a
            field that is not a scalar int64.
    """

    name: str
    dtype: str
    shape: tuple[int, ...] = ()
    categories: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name or any(ord(c) < 32 for c in self.name):
            raise DataError(f"field name {self.name!r}: expected a non-empty name without control characters")
        if self.dtype not in DTYPES:
            raise DataError(f"field {self.name!r}: dtype {self.dtype!r}, expected one of {', '.join(DTYPES)}")
        object.__setattr__(self, "shape", tuple(int(d) for d in self.shape))
        if any(d < 1 for d in self.shape):
            raise DataError(f"field {self.name!r}: shape {self.shape}, expected positive dimensions")
        if math.prod(self.shape) * np.dtype(self.dtype).itemsize >= 2**31:  # numpy's limit for one record
            raise DataError(f"field {self.name!r}: shape {self.shape} is 2 GiB or more per example, expected less")
        if self.categories is not None:
            object.__setattr__(self, "categories", tuple(str(c) for c in self.categories))
            if self.dtype != "int64" or self.shape != () or len(set(self.categories)) != len(self.categories):
                raise DataError(f"field {self.name!r}: categories need a scalar int64 field and distinct names")

    def describe(self) -> str:
        """Return e.g. ``image: float32[3, 32, 32]`` or ``flag: int64{3 categories}``."""
        shape = f"[{', '.join(map(str, self.shape))}]" if self.shape else ""
        cats = f"{{{len(self.categories)} categories}}" if self.categories is not None else ""
        return f"{self.name}: {self.dtype}{shape}{cats}"


@dataclass(frozen=True)
class Schema:
    """The fields of every example, and which one is the label.

    Attributes:
        fields: the fields, in order (the order of a record's bytes in the Example Store).
        label: the label field's name, or None for unlabelled data.

    Raises:
        DataError: no fields, a name used twice, or a label that is not a field.
    """

    fields: tuple[Field, ...]
    label: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "fields", tuple(self.fields))
        names = [f.name for f in self.fields]
        if not names:
            raise DataError("a schema needs at least one field")
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise DataError(f"schema: field {dup[0]!r} is declared twice")
        if self.label is not None and self.label not in names:
            raise DataError(f"schema: label {self.label!r} is not a field (fields: {', '.join(names)})")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)

    @property
    def features(self) -> tuple[str, ...]:
        """The names of the fields that are not the label."""
        return tuple(f.name for f in self.fields if f.name != self.label)

    def field(self, name: str) -> Field:
        """Return the field called ``name``.

        Raises:
            DataError: no such field (the message lists the fields).
        """
        for f in self.fields:
            if f.name == name:
                return f
        raise DataError(f"no field {name!r} (fields: {', '.join(self.names)})")

    def describe(self) -> str:
        """Return a one-line description, e.g. ``x: float32[4], y: int64 (label)``."""
        return ", ".join(f.describe() + (" (label)" if f.name == self.label else "") for f in self.fields)

    def record_dtype(self) -> np.dtype:
        """Return the numpy structured dtype of one record: the fields' bytes in order, packed."""
        return np.dtype([(f.name, f.dtype, f.shape) for f in self.fields])

    def to_json(self) -> str:
        """Return the schema as JSON (kept in the Example Store's ``meta`` table)."""
        return json.dumps(
            {
                "label": self.label,
                "fields": [
                    {
                        "name": f.name,
                        "dtype": f.dtype,
                        "shape": list(f.shape),
                        "categories": None if f.categories is None else list(f.categories),
                    }
                    for f in self.fields
                ],
            },
            sort_keys=True,
        )

    @staticmethod
    def from_json(text: str, where: str = "schema") -> Schema:
        """Parse :meth:`to_json`'s output.

        Raises:
            DataError: the text is not such a schema (names ``where``).
        """
        try:
            obj = json.loads(text)
            fields = tuple(
                Field(
                    f["name"],
                    f["dtype"],
                    tuple(_json_list(f["shape"], "shape", ints=True)),
                    None if f.get("categories") is None else tuple(_json_list(f["categories"], "categories")),
                )
                for f in obj["fields"]
            )
            return Schema(fields, obj.get("label"))
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as e:  # also nesting past the stack
            raise DataError(f"{where}: not a valid schema ({str(e)[:200]})") from None

    def check(self, columns: Mapping[str, Any], where: str) -> dict[str, np.ndarray]:
        """Check a batch of examples against the schema and return it as arrays of the declared dtypes.

        Args:
            columns: field name -> values of every example (leading dimension = the examples).
                A categorical field also takes its category names as text.
            where: what the batch is, for error messages (a file, ``"record"``).

        Returns:
            field name -> C-contiguous array of the field's dtype, shape ``[N, *field.shape]``.

        Raises:
            DataError: a field missing or unexpected, a wrong shape, a dtype that cannot hold the
                values, an unknown category, a non-finite number, or fields of different lengths.
        """
        extra = sorted(set(columns) - set(self.names))
        if extra:
            raise DataError(f"{where}: unexpected field {extra[0]!r} (schema: {self.describe()})")
        out = {f.name: _check_field(f, columns, where, self.describe) for f in self.fields}
        sizes = {name: len(a) for name, a in out.items()}
        if len(set(sizes.values())) > 1:
            raise DataError(f"{where}: fields have different numbers of examples {sizes}, expected one count")
        return out


def _json_list(value: Any, what: str, ints: bool = False) -> list:
    """Return ``value`` if it is a JSON list (of integers, for a shape), else raise TypeError."""
    if not isinstance(value, list) or (ints and not all(type(v) is int for v in value)):
        raise TypeError(f"{what} {value!r:.60}: expected a list{' of integers' if ints else ''}")
    return value


def _check_field(f: Field, columns: Mapping[str, Any], where: str, describe) -> np.ndarray:
    if f.name not in columns:
        raise DataError(f"{where}: field {f.name!r} is missing (schema: {describe()})")
    try:
        arr = np.asarray(columns[f.name])
    except (ValueError, TypeError) as e:  # ragged lists, unconvertible objects
        raise DataError(f"{where}: field {f.name!r} is not an array of one shape ({e})") from None
    if f.categories is not None and arr.dtype.kind in "USO":
        arr = encode_categories(arr, f.categories, f"{where}: field {f.name!r}")
    if arr.ndim == 0 or arr.shape[1:] != f.shape:
        got = "a scalar batch" if arr.ndim == 0 else f"shape {list(arr.shape[1:])} per example"
        raise DataError(f"{where}: field {f.name!r} has {got}, expected {list(f.shape)} per example")
    target = np.dtype(f.dtype)
    if arr.dtype.kind not in _ACCEPTS[target.kind]:
        raise DataError(f"{where}: field {f.name!r} holds {arr.dtype} values, expected {f.dtype}")
    if arr.dtype.kind == "f" and arr.size and not np.isfinite(arr).all():
        raise DataError(f"{where}: field {f.name!r} holds NaN or infinite values, expected finite numbers")
    if target.kind == "f" and arr.size and np.abs(arr).max() > np.finfo(target).max:
        raise DataError(f"{where}: field {f.name!r} holds values outside {f.dtype}'s range")
    if target.kind in "iu" and arr.size and arr.dtype != target:
        info = np.iinfo(target)
        if arr.min() < info.min or arr.max() > info.max:
            raise DataError(f"{where}: field {f.name!r} holds values outside {f.dtype}'s range")
    if f.categories is not None and arr.size and (arr.min() < 0 or arr.max() >= len(f.categories)):
        raise DataError(
            f"{where}: field {f.name!r} holds codes outside 0..{len(f.categories) - 1} "
            f"(its {len(f.categories)} categories)"
        )
    return np.ascontiguousarray(arr, dtype=target)


def encode_categories(values: np.ndarray, categories: tuple[str, ...], where: str) -> np.ndarray:
    """Return the int64 codes of text ``values`` in ``categories``.

    Raises:
        DataError: a value is not one of the categories (names it and a few expected ones).
    """
    index = {c: i for i, c in enumerate(categories)}
    flat = [str(v) for v in np.asarray(values, dtype=object).ravel()]
    unknown = next((v for v in flat if v not in index), None)
    if unknown is not None:
        shown = ", ".join(repr(c) for c in categories[:8]) + (", ..." if len(categories) > 8 else "")
        raise DataError(f"{where}: unknown category {unknown!r}, expected one of {shown}")
    return np.array([index[v] for v in flat], dtype=np.int64).reshape(np.shape(values))
