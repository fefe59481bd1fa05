"""Hypothesis strategies shared by the data and store tests: arbitrary schemas and matching columns."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from hamrah.data.schema import DTYPES, Field, Schema

names = st.text(st.characters(min_codepoint=33, max_codepoint=0x2FF), min_size=1, max_size=6)
shapes = st.lists(st.integers(1, 3), max_size=2).map(tuple)


@st.composite
def fields(draw, name: str) -> Field:
    if draw(st.booleans()):
        cats = draw(st.lists(names, min_size=1, max_size=4, unique=True))
        return Field(name, "int64", categories=tuple(cats))
    return Field(name, draw(st.sampled_from(DTYPES)), draw(shapes))


@st.composite
def schemas(draw, max_fields: int = 4) -> Schema:
    field_names = draw(st.lists(names, min_size=1, max_size=max_fields, unique=True))
    fs = tuple(draw(fields(n)) for n in field_names)
    label = draw(st.sampled_from((None, *field_names)))
    return Schema(fs, label)


def values(draw, f: Field, n: int) -> np.ndarray:
    """Draw ``n`` valid values of field ``f``."""
    shape = (n, *f.shape)
    size = int(np.prod(shape))
    if f.categories is not None:
        return np.array(draw(st.lists(st.integers(0, len(f.categories) - 1), min_size=n, max_size=n)), np.int64)
    if f.dtype == "bool":
        elems = st.booleans()
    elif f.dtype == "uint8":
        elems = st.integers(0, 255)
    elif f.dtype.startswith("int"):
        info = np.iinfo(f.dtype)
        elems = st.integers(int(info.min), int(info.max))
    else:
        elems = st.floats(-1e6, 1e6, allow_nan=False, width=32 if f.dtype == "float32" else 64)
    return np.array(draw(st.lists(elems, min_size=size, max_size=size)), dtype=f.dtype).reshape(shape)


@st.composite
def schema_and_columns(draw, max_rows: int = 6) -> tuple[Schema, dict[str, np.ndarray]]:
    schema = draw(schemas())
    n = draw(st.integers(0, max_rows))
    return schema, {f.name: values(draw, f, n) for f in schema.fields}
