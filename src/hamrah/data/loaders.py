"""One entry point for the user's data: :func:`load_examples` picks the loader by format.

Formats: ``csv`` and ``parquet`` (:mod:`hamrah.data.tabular`), ``images`` (a folder by class,
:mod:`hamrah.data.images`), ``npz`` (:mod:`hamrah.data.arrays`), ``hf`` (a Hugging Face
``save_to_disk`` folder, :mod:`hamrah.data.hub`). Every one returns
:class:`~hamrah.data.examples.Examples`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from hamrah.core.errors import DataError
from hamrah.data.schema import Schema

if TYPE_CHECKING:
    from hamrah.data.examples import Examples

FORMATS = ("csv", "parquet", "npz", "images", "hf")


@dataclass(frozen=True)
class SourceSpec:
    """What to read from a file or folder.

    Attributes:
        format: one of :data:`FORMATS`, or None to tell by the path (:func:`detect_format`).
        label: the label column / array / feature (None: the format's default).
        features: the feature columns (tables only; None: all but the label and client column).
        client_column: tables: a client-id column; npz: a client-id array (the natural partition).
        split: images, npz, hf: the split to read (``"train"``, ``"test"``).
        missing: tables: ``"error"`` or ``"drop"`` for rows with a missing value.
        column_names: CSV files without a header row: their column names.
        image_size: images: resize to (height, width).
        image_mode: images, hf: ``"RGB"`` or ``"L"``.
    """

    format: str | None = None
    label: str | None = None
    features: tuple[str, ...] | None = None
    client_column: str | None = None
    split: str | None = None
    missing: str = "error"
    column_names: tuple[str, ...] | None = None
    image_size: tuple[int, int] | None = None
    image_mode: str = "RGB"

    def __post_init__(self) -> None:
        if self.format is not None and self.format not in FORMATS:
            raise DataError(f"format {self.format!r}: expected one of {', '.join(FORMATS)}")


def detect_format(path: str | os.PathLike) -> str:
    """Tell the format of ``path``: by extension for a file, by contents for a folder.

    Raises:
        DataError: the path does not exist or its format cannot be told (names the formats).
    """
    from hamrah.data.tabular import CSV_SUFFIXES, PARQUET_SUFFIXES

    p = Path(path)
    if p.is_file():
        name = p.name.lower()
        for fmt, suffixes in (("npz", (".npz",)), ("parquet", PARQUET_SUFFIXES), ("csv", CSV_SUFFIXES)):
            if name.endswith(suffixes):
                return fmt
        raise DataError(f"{p}: cannot tell the format from the name; pass a format ({', '.join(FORMATS)})")
    if not p.is_dir():
        raise DataError(f"{p}: no such file or folder")
    if (p / "dataset_dict.json").is_file() or (p / "state.json").is_file():
        return "hf"
    names = [f.name.lower() for f in p.iterdir() if f.is_file()]
    if any(n.endswith(PARQUET_SUFFIXES) for n in names):
        return "parquet"
    if any(n.endswith(CSV_SUFFIXES) for n in names):
        return "csv"
    return "images"


def load_examples(
    source: str | os.PathLike | Sequence[str | os.PathLike],
    spec: SourceSpec = SourceSpec(),
    schema: Schema | None = None,
) -> Examples:
    """Load the user's data from a file or folder with the loader of its format.

    Args:
        source: the file or folder (tables: also a list of files, one client each).
        spec: the format and the columns, split and policies to use.
        schema: a schema to match: a task's declared schema, or the training set's for a test set.
            Its categories encode text values, so every client gets the same codes.

    Returns:
        The examples, under their schema.

    Raises:
        DataError: from the loader: one line naming the file, the field and what was expected.
    """
    many = not isinstance(source, (str, os.PathLike))
    if many and not source:
        raise DataError("no data files given")
    fmt = spec.format or detect_format(source[0] if many else source)  # type: ignore[index]
    if many and fmt not in ("csv", "parquet"):
        raise DataError(f"format {fmt!r} reads one file or folder; a list of files is for CSV or Parquet tables")
    if fmt in ("csv", "parquet"):
        from hamrah.data.tabular import TableSpec, load_table

        return load_table(
            source,
            TableSpec(
                spec.label,
                spec.features,
                spec.client_column,
                missing=spec.missing,
                column_names=spec.column_names,
                format=spec.format,
            ),
            schema,
        )
    if fmt == "npz":
        from hamrah.data.arrays import load_npz

        return load_npz(source, spec.label, spec.split, spec.client_column, schema)
    if fmt == "images":
        from hamrah.data.images import ImageSpec, load_images

        classes = None
        if schema is not None and schema.label is not None:
            classes = schema.field(schema.label).categories
        return _matched(load_images(source, ImageSpec(spec.split, spec.image_mode, spec.image_size, classes)), schema)
    from hamrah.data.hub import load_hf

    return load_hf(source, spec.split, spec.label, spec.image_mode, schema)


def _matched(examples: Examples, schema: Schema | None) -> Examples:
    if schema is not None and examples.schema != schema:
        raise DataError(
            f"{examples.source}: its schema ({examples.schema.describe()}) does not match the "
            f"expected one ({schema.describe()})"
        )
    return examples
