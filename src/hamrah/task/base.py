"""The task contract: what user code implements so hamrah can federate its model on its data.

A task builds the model, scores a batch (``loss``), measures a batch (``metrics``, each value carrying
its own reduction) and says how to read its examples (``data``, under its ``schema``). hamrah's own
reference models are tasks too (:mod:`hamrah.task.builtin`): every trainer takes its loss and metrics
from a task. Most users subclass one of the ready-made kinds (:mod:`hamrah.task.kinds`) and write
``model`` and ``data`` only.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import sys
import traceback
from collections.abc import Callable, Sequence
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, TypeVar

import torch
from torch import nn

from hamrah.core.errors import ConfigError, HamrahError
from hamrah.core.metrics import Metric
from hamrah.data.federated import ArrayData, Dataset
from hamrah.data.schema import Schema

T = TypeVar("T")

if TYPE_CHECKING:
    from hamrah.data.examples import Examples

REQUIRED = ("model", "loss", "metrics", "data")  # what a usable task defines beyond the base class


class Task:
    """Base class of every task; subclass it (or a kind such as :class:`~hamrah.task.ClassificationTask`).

    Attributes:
        name: the task's name (default: the class name), written in plans and manifests.
        version: bump it when the model or the data it expects change.
        schema: the fields of the records the task reads (a CSV's columns, the Example Store's
            records), or None when ``data`` needs no declared schema.

    Example:
        >>> class Hospital(BinaryTask):  # doctest: +SKIP
        ...     def model(self):
        ...         return nn.Sequential(nn.Linear(30, 16), nn.ReLU(), nn.Linear(16, 2))
        ...     def data(self):
        ...         return self.read_tables("train.csv", "test.csv", label="y")
    """

    name: ClassVar[str] = ""
    version: ClassVar[str] = "1"
    schema: Schema | None = None

    def model(self) -> nn.Module:
        """Return a freshly built model (its initial weights are drawn under the run's seed)."""
        raise NotImplementedError

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Return the mean loss of a batch (a 0-d tensor); targets equal to ``PAD_LABEL`` count for nothing."""
        raise NotImplementedError

    def metrics(self, output: torch.Tensor, target: torch.Tensor) -> dict[str, Metric]:
        """Return the metrics of a batch, each a ``Weighted`` / ``Summed`` / ``ScoreHistogram`` (merged by sum)."""
        raise NotImplementedError

    def data(self) -> Dataset | Examples | tuple[Examples, Examples]:
        """Return the task's training examples (with their natural clients, if any) and test examples."""
        raise NotImplementedError

    def predict(self, output: torch.Tensor) -> dict[str, torch.Tensor]:
        """Return the columns ``hamrah predict`` writes for a batch of model outputs (default: the outputs)."""
        return {"prediction": output.reshape(len(output), -1).squeeze(1)}

    @property
    def task_name(self) -> str:
        """The task's name: ``name``, or the class name."""
        return self.name or type(self).__name__

    def digest(self) -> str:
        """Return ``<version>-<sha256 of the source of the module defining the class and the instance's
        settings>`` (first 16 hex digits).

        The settings are the instance's attributes holding plain values (numbers, strings, booleans,
        None, and lists, tuples or dicts of them): what a task's keyword arguments set (``[task] kwargs``),
        so the same class built with other arguments has another digest. Two installations run the
        same task only if their digests agree (the FL plan carries it).
        """
        module = sys.modules.get(type(self).__module__)
        try:
            source = inspect.getsource(module) if module is not None else type(self).__qualname__
        except (OSError, TypeError):  # defined interactively: no file to hash
            source = type(self).__qualname__
        settings = {k: v for k, v in sorted(getattr(self, "__dict__", {}).items()) if _plain(v)}
        text = source + "\n" + json.dumps(settings, sort_keys=True, default=str)
        return f"{self.version}-{hashlib.sha256(text.encode('utf-8')).hexdigest()[:16]}"

    def local_data(self, path: str | PathLike[str]) -> Examples | ArrayData:
        """One site's own examples, read from ``path`` the way ``data()`` reads every site's: what
        ``hamrah store import --config DEVICE.toml --from PATH`` puts in a device's Example Store.

        The default reads ``path`` with :func:`hamrah.data.load_examples` under the task's ``schema``.
        A task whose ``data()`` does more than a loader (text cut into sequences, images resized)
        overrides it and returns the site's ``Examples`` or ``ArrayData``, as ``data()`` builds them.

        Raises:
            ConfigError: no ``schema`` to read a site's files under (declare one, or override this).
        """
        if self.schema is None:
            raise ConfigError(
                f"task {self.task_name}: declares no schema to read a site's own files under; expected a "
                "schema = Schema(...), a local_data(path) of its own, or store import --from PATH --schema "
                "runs/<run>/manifest.json without --config"
            )
        from hamrah.data.loaders import SourceSpec, load_examples

        return load_examples(path, SourceSpec(), self.schema)

    def read_tables(
        self,
        train: str | PathLike[str] | Sequence[str | PathLike[str]],
        test: str | PathLike[str] | None = None,
        *,
        label: str | None = None,
        features: Sequence[str] | None = None,
        client_column: str | None = None,
        missing: str = "error",
    ) -> Dataset:
        """Read CSV / Parquet files (one per client, or one with a ``client_column``) into a data set.

        Columns are read under ``schema`` when the task declares one, else every column but the label
        (and the client column) is a feature. The test file is read under the training set's schema.
        ``missing``: ``"error"`` (a blank cell stops with its file, row and column) or ``"drop"``
        (rows with a blank cell are left out, in the training and the test files).

        Raises:
            DataError: a file that does not match the schema, a label column that does not exist.
        """
        from hamrah.data.loaders import SourceSpec, load_examples

        cols = None if features is None else tuple(features)
        spec = SourceSpec(label=label, features=cols, client_column=client_column, missing=missing)
        tr = load_examples(train, spec, self.schema)
        te = load_examples(test, SourceSpec(missing=missing), tr.schema) if test is not None else None
        return examples_dataset(self.task_name, tr, te)


def examples_dataset(name: str, train: Examples, test: Examples | None = None) -> Dataset:
    """Return a :class:`Dataset` of :class:`~hamrah.data.Examples` (class labels, or float targets).

    Unlike :func:`hamrah.data.to_dataset` a float label (regression) is kept; its ``num_classes`` is 0.
    The training schema is kept in ``info["schema"]`` (JSON), for ``hamrah predict`` and the FL plan, and
    the training examples in ``info["train_examples"]`` (row ``i`` is ``train.x[i]``), from which a
    device's Example Store is filled with its client's records under that schema.
    """
    from hamrah.data.examples import to_dataset
    from hamrah.data.federated import ArrayData

    info = {"schema": train.schema.to_json(), "train_examples": train}
    if train.num_classes is not None:
        return dataclasses.replace(to_dataset(name, train, test), info=info)
    tr = train.to_array_data()
    te = test.to_array_data() if test is not None else ArrayData(tr.x[:0], tr.y[:0])
    return Dataset(name, tr, te, 0, train.groups, train.group_names, info=info)


def call_user(what: str, fn: Callable[[], T]) -> T:
    """Call a user's task code: an exception it raises (other than hamrah's own errors) becomes one
    ConfigError line naming ``what``, the error and the line of the user's code it came from.

    Raises:
        ConfigError: ``fn`` raised.
    """
    try:
        return fn()
    except HamrahError:
        raise
    except Exception as e:
        raise user_error(what, e) from e


def user_error(what: str, e: BaseException) -> ConfigError:
    """Return the one line for ``e`` raised by a user's code in ``what``: its kind, message and the line of
    the user's file it came from (the last frame outside hamrah and installed packages)."""
    frames = traceback.extract_tb(e.__traceback__)
    own = [f for f in frames if "site-packages" not in f.filename and _HERE not in f.filename]
    at = f" (at {Path(own[-1].filename).name}:{own[-1].lineno})" if own else ""
    return ConfigError(f"{what} raised {type(e).__name__}: {e}{at}".replace("\n", " "))


_HERE = str(Path(__file__).resolve().parents[1])  # hamrah's own frames are not the user's


def task_dataset(task: Task) -> Dataset:
    """Return ``task.data()`` as a :class:`Dataset` (it may also return training :class:`Examples`, or a
    ``(train, test)`` pair of them).

    Raises:
        ConfigError: ``data()`` returned something else.
    """
    from hamrah.data.examples import Examples

    data = call_user(f"task {task.task_name}: data()", task.data)
    if isinstance(data, Dataset):
        return check_arrays(task, data)
    if isinstance(data, Examples):
        return examples_dataset(task.task_name, data)
    if isinstance(data, tuple) and len(data) == 2 and all(isinstance(d, Examples) for d in data):
        return examples_dataset(task.task_name, *data)
    raise ConfigError(
        f"task {task.task_name}: data() returned a {type(data).__name__}, expected a hamrah.data.Dataset, "
        "Examples, or a (train, test) pair of Examples"
    )


def check_arrays(task: Task, data: Dataset) -> Dataset:
    """Return the ``Dataset`` a task's ``data()`` built if its inputs and targets are tensors of one length.

    Raises:
        ConfigError: an input or target that is not a torch.Tensor, or inputs and targets of other lengths.
    """
    for split, part in (("training", data.train), ("test", data.test)):
        for name, t in (("x", part.x), ("y", part.y)):
            if not isinstance(t, torch.Tensor) or t.ndim == 0:
                what = "a 0-d tensor" if isinstance(t, torch.Tensor) else f"a {type(t).__name__}"
                raise ConfigError(
                    f"task {task.task_name}: data()'s {split} {name} is {what}; expected a torch.Tensor with "
                    "one row per example (torch.from_numpy(...) or torch.as_tensor(...))"
                )
        if len(part.x) != len(part.y):
            raise ConfigError(
                f"task {task.task_name}: data()'s {split} set has {len(part.x)} inputs (x) and {len(part.y)} "
                "targets (y); expected one target per input"
            )
    return data


def check_task(obj: object, where: str) -> Task:
    """Return ``obj`` if it is a usable :class:`Task`.

    Raises:
        ConfigError: ``obj`` is not a Task, or does not define one of ``model``, ``loss``, ``metrics``, ``data``.
    """
    if not isinstance(obj, Task):
        raise ConfigError(
            f"{where} is of type {type(obj).__name__}, expected a hamrah.Task "
            "(a subclass, an instance, or a function returning one)"
        )
    check_complete(type(obj), where)
    return obj


def check_complete(cls: type[Task], where: str) -> None:
    """Refuse a Task class that does not define every one of ``REQUIRED``.

    Raises:
        ConfigError: naming the missing methods.
    """
    missing = [m for m in REQUIRED if getattr(cls, m) is getattr(Task, m)]
    if missing:
        raise ConfigError(
            f"{where}: task {cls.__name__} does not define {', '.join(m + '()' for m in missing)}; "
            f"expected every one of {', '.join(m + '()' for m in REQUIRED)}"
        )


def _plain(value: object) -> bool:
    """True for a JSON-like value (what a task's keyword arguments are): part of the task's digest."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    return False
