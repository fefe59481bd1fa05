"""Examples: a labelled data set of named fields under a :class:`~hamrah.data.schema.Schema`.

Every loader (CSV, Parquet, images, ``.npz``, a Hugging Face folder) returns :class:`Examples`;
the partitioners split it into per-client index sets (:func:`hamrah.data.partition.split`); the
Example Store holds its records. :meth:`Examples.to_array_data` gives the ``(x, y)`` tensors that
today's built-in models and trainers take.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np
import torch

from hamrah.core.errors import DataError
from hamrah.data.federated import ArrayData, Dataset
from hamrah.data.schema import Field, Schema

MAX_CLASSES = 1_000_000  # the most classes an integer label may imply (max + 1)


@dataclass(frozen=True)
class Examples:
    """Examples as aligned arrays, one per schema field (read-only).

    Attributes:
        schema: the fields and the label.
        fields: field name -> array ``[N, *field.shape]`` of the field's dtype.
        groups: the natural client (file, client-id value) of each example as int64 ids, or None.
        group_names: the name of each group id.
        source: where the examples came from (for messages).

    Raises:
        DataError: the arrays do not match the schema, or the groups do not match the examples.

    Example:
        >>> from hamrah.data.schema import Field
        >>> ex = Examples.from_columns({"x": [[0.5, 1.0], [2.0, 0.0]], "y": [1, 0]},
        ...                            Schema((Field("x", "float32", (2,)), Field("y", "int64")), label="y"))
        >>> len(ex), ex.labels.tolist(), ex.to_array_data().x.shape
        (2, [1, 0], torch.Size([2, 2]))
    """

    schema: Schema
    fields: Mapping[str, np.ndarray]
    groups: np.ndarray | None = None
    group_names: tuple[str, ...] | None = None
    source: str = ""

    def __post_init__(self) -> None:
        arrays = self.schema.check(self.fields, self.source or "examples")
        for a in arrays.values():
            a.flags.writeable = False
        object.__setattr__(self, "fields", MappingProxyType(arrays))
        if self.groups is not None:
            g = np.asarray(self.groups, dtype=np.int64)
            if g.shape != (len(self),):
                raise DataError(f"{self.source or 'examples'}: {len(g)} group ids for {len(self)} examples")
            if self.group_names is not None and len(g) and not 0 <= g.min() <= g.max() < len(self.group_names):
                raise DataError(f"{self.source or 'examples'}: group ids outside 0..{len(self.group_names) - 1}")
            g.flags.writeable = False
            object.__setattr__(self, "groups", g)

    def __reduce__(self):
        """Pickle (worker processes, Ray) by the constructor's arguments: ``fields`` is a read-only proxy."""
        return (Examples, (self.schema, dict(self.fields), self.groups, self.group_names, self.source))

    @staticmethod
    def from_columns(columns: Mapping[str, Any], schema: Schema, **kw: Any) -> Examples:
        """Build examples from any array-likes (lists, numpy arrays, text for categorical fields)."""
        return Examples(schema, dict(columns), **kw)

    @staticmethod
    def from_array_data(
        data: ArrayData, groups: np.ndarray | None = None, group_names: tuple[str, ...] | None = None, source: str = ""
    ) -> Examples:
        """View ``(x, y)`` tensors (a built-in data set) as examples of schema ``x, y (label)``.

        The inverse of :meth:`to_array_data` for one feature field: ``from_array_data(d).to_array_data()``
        gives back ``d``'s tensors (float32 or int64 features).
        """
        x, y = data.x.numpy(), data.y.numpy()
        schema = Schema((Field("x", x.dtype.name, x.shape[1:]), Field("y", y.dtype.name, y.shape[1:])), label="y")
        return Examples(schema, {"x": x, "y": y}, groups, group_names, source)

    def __len__(self) -> int:
        return len(next(iter(self.fields.values())))

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self.fields:
            raise DataError(f"{self.source or 'examples'}: no field {name!r} (fields: {', '.join(self.schema.names)})")
        return self.fields[name]

    @property
    def labels(self) -> np.ndarray:
        """The label field's values.

        Raises:
            DataError: the schema declares no label.
        """
        if self.schema.label is None:
            raise DataError(f"{self.source or 'examples'}: no label field (schema: {self.schema.describe()})")
        return self.fields[self.schema.label]

    @property
    def num_classes(self) -> int | None:
        """The number of classes of an integer label (its categories, else max + 1); None otherwise."""
        if self.schema.label is None:
            return None
        f = self.schema.field(self.schema.label)
        if f.categories is not None:
            return len(f.categories)
        y = self.labels
        if not (y.dtype.kind in "iub" and f.shape == () and len(y)):
            return None
        top = int(y.max())
        if top >= MAX_CLASSES:  # ids, not classes: a model would get an output per id (10^8 of them: its memory)
            raise DataError(
                f"{self.source or 'examples'}: label {self.schema.label!r} goes up to {top:,}, which would make "
                f"{top + 1:,} classes; expected class ids 0..K-1 with K at most {MAX_CLASSES:,} (map sparse ids "
                "to 0..K-1, or declare the field's categories)"
            )
        return top + 1

    def take(self, indices: np.ndarray) -> Examples:
        """Return the examples at ``indices`` (e.g. one client's index set), in that order."""
        ix = np.asarray(indices, dtype=np.int64)
        if ix.size and (ix.min() < 0 or ix.max() >= len(self)):
            raise DataError(f"{self.source or 'examples'}: an index is outside 0..{len(self) - 1}")
        return Examples(
            self.schema,
            {k: v[ix] for k, v in self.fields.items()},
            None if self.groups is None else self.groups[ix],
            self.group_names,
            self.source,
        )

    def to_array_data(self, features: tuple[str, ...] | None = None) -> ArrayData:
        """Return ``(x, y)`` tensors for the built-in models and trainers.

        One feature field keeps its shape and dtype (an image stays float32 ``[N, C, H, W]``, token
        ids stay int64; other numbers become float32); several are flattened and concatenated as float32,
        a categorical field as its one-hot columns. ``y`` is the label (int64 for integer labels,
        float32 otherwise; zeros when there is no label).

        Args:
            features: the feature fields to use, in order (default: every field but the label).
        """
        names = self.schema.features if features is None else tuple(features)
        if not names:
            raise DataError(f"{self.source or 'examples'}: no feature fields (schema: {self.schema.describe()})")
        if len(names) == 1 and self.schema.field(names[0]).categories is None:
            v = self[names[0]]
            x = v.astype(np.int64) if v.dtype.kind == "i" else v.astype(np.float32)
        else:
            x = np.concatenate([self._feature_matrix(n) for n in names], axis=1)
        if self.schema.label is None:
            y = np.zeros(len(self), np.int64)
        else:
            y = self.labels
            y = y.astype(np.int64) if y.dtype.kind in "iub" else y.astype(np.float32)
        return ArrayData(torch.from_numpy(np.array(x)), torch.from_numpy(np.array(y)))

    def _feature_matrix(self, name: str) -> np.ndarray:
        f, v = self.schema.field(name), self[name]
        if f.categories is not None:
            return np.eye(len(f.categories), dtype=np.float32)[v]
        return v.reshape(len(v), -1).astype(np.float32)


def to_dataset(
    name: str, train: Examples, test: Examples | None = None, features: tuple[str, ...] | None = None
) -> Dataset:
    """Return a :class:`~hamrah.data.federated.Dataset` for today's simulator (x/y tensors).

    Args:
        name: the data set's short name.
        train, test: the examples (test: None gives an empty test set).
        features: as in :meth:`Examples.to_array_data`.

    Raises:
        DataError: the train and test schemas differ, or the label is not a class label.
    """
    if test is not None and test.schema != train.schema:
        raise DataError(
            f"{name}: the test set's schema ({test.schema.describe()}) differs from the training "
            f"set's ({train.schema.describe()}); load the test set with schema=train.schema"
        )
    classes = train.num_classes
    if classes is None:
        raise DataError(f"{name}: label {train.schema.label!r} is not a class label (expected integer classes)")
    for ex in (train, test) if test is not None else (train,):  # a negative class id fails only in training
        bad = (ex.labels < 0) & (ex.labels != -100) if ex.labels.dtype.kind == "i" else np.zeros(0, bool)
        if bad.any():  # -100: torch's ignore_index, the task's PAD_LABEL (an example without a target)
            row = int(np.argmax(bad))
            raise DataError(
                f"{ex.source or name}: example {row} has label {ex.schema.label!r} = {int(ex.labels[row])}; "
                "expected class ids 0, 1, ... (or -100 for no target, or text classes)"
            )
    tr = train.to_array_data(features)
    te = test.to_array_data(features) if test is not None else ArrayData(tr.x[:0], tr.y[:0])
    if test is not None and test.num_classes is not None:
        classes = max(classes, test.num_classes)
    return Dataset(name, tr, te, classes, train.groups, train.group_names)


def dataset_examples(dataset: Dataset) -> tuple[Examples, Examples]:
    """Return a built-in :class:`~hamrah.data.federated.Dataset`'s train and test sets as examples.

    The train set keeps the natural clients (``train_groups``), so every partitioner applies.
    """
    train = Examples.from_array_data(dataset.train, dataset.train_groups, dataset.group_names, dataset.name)
    return train, Examples.from_array_data(dataset.test, source=dataset.name)
