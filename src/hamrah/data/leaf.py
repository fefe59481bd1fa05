"""Reader for data sets in LEAF's JSON format (FEMNIST and alike).

LEAF (Caldas et al. 2018, https://github.com/TalwalkarLab/leaf) writes each split as
one or more JSON files (optionally gzipped) under ``<root>/train`` and ``<root>/test``::

    {"users": ["f3152_47", ...],
     "num_samples": [163, ...],
     "user_data": {"f3152_47": {"x": [[784 floats], ...], "y": [22, ...]}, ...}}

:func:`load_leaf` pools the examples of every user: ``train_groups`` holds the user of
each training example, so the natural (per-writer) partition can be rebuilt.

FEMNIST pixels are in ``[0, 1]`` with a white background (1.0) and dark ink, the
inverse of MNIST; they are returned as stored.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import zlib
from pathlib import Path

import numpy as np
import torch

from hamrah.core.errors import DataError
from hamrah.data.federated import ArrayData, Dataset
from hamrah.data.locate import cached_arrays, sha256_file

__all__ = ["FEMNIST_CLASSES", "load_leaf"]

#: FEMNIST's classes: 10 digits, 26 upper-case and 26 lower-case letters.
FEMNIST_CLASSES = 62

_DEFAULT_SHAPE = object()


def _json_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise DataError(
            f"LEAF data: folder {folder} not found; expected <root>/train and <root>/test "
            "holding LEAF JSON files (*.json or *.json.gz)."
        )
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith((".json", ".json.gz")))
    if not files:
        raise DataError(f"LEAF data: no *.json or *.json.gz file in {folder}.")
    return files


def _read_json(p: Path) -> dict:
    try:
        if p.name.endswith(".gz"):
            with gzip.open(p, "rt", encoding="utf-8-sig") as fh:
                obj = json.load(fh)
        else:
            with open(p, encoding="utf-8-sig") as fh:
                obj = json.load(fh)
    except (OSError, EOFError, zlib.error, UnicodeDecodeError) as e:
        raise DataError(f"LEAF data: cannot read {p} ({e}); the file is corrupt.") from e
    except (ValueError, RecursionError) as e:  # also an integer of 4,300+ digits, nesting deeper than Python's stack
        raise DataError(f"LEAF data: {p} is not valid JSON ({str(e)[:200]}).") from e
    if not isinstance(obj, dict):
        raise DataError(f"LEAF data: {p} holds a JSON {type(obj).__name__}, expected an object.")
    for key in ("users", "user_data"):
        if key not in obj:
            raise DataError(f"LEAF data: {p} has no {key!r} key; expected keys 'users', 'num_samples', 'user_data'.")
    if not isinstance(obj["users"], list) or not isinstance(obj["user_data"], dict):
        raise DataError(f"LEAF data: in {p}, 'users' must be a list and 'user_data' an object.")
    return obj


def _read_split(
    files: list[Path], features: int | None
) -> tuple[list[str], dict[str, list[np.ndarray]], dict[str, list[np.ndarray]], int | None]:
    """Return user ids (order of first appearance), their x and y blocks, and the input size."""
    users: list[str] = []
    xs: dict[str, list[np.ndarray]] = {}
    ys: dict[str, list[np.ndarray]] = {}
    for p in files:
        obj = _read_json(p)
        num_samples = obj.get("num_samples")
        if num_samples is not None and (not isinstance(num_samples, list) or len(num_samples) != len(obj["users"])):
            raise DataError(
                f"LEAF data: in {p}, 'num_samples' must be a list with one count per user ({len(obj['users'])} users)."
            )
        listed = [str(u) for u in obj["users"]]
        if len(set(listed)) != len(listed) or set(listed) != set(obj["user_data"]):
            twice = sorted({u for u in listed if listed.count(u) > 1})
            unlisted = sorted(set(obj["user_data"]) - set(listed))
            if twice or unlisted:
                what = f"user {twice[0]!r} is listed twice" if twice else f"user {unlisted[0]!r} is not in 'users'"
                raise DataError(f"LEAF data: in {p}, {what}; expected each user of 'user_data' listed once.")
        for j, u in enumerate(listed):
            data = obj["user_data"].get(u)
            if not isinstance(data, dict) or "x" not in data or "y" not in data:
                raise DataError(
                    f"LEAF data: in {p}, user {u!r} is listed in 'users' but has no 'user_data' entry with 'x' and 'y'."
                )
            try:
                x = np.asarray(data["x"], dtype=np.float32)
                y = np.asarray(data["y"], dtype=np.float64)
            except (TypeError, ValueError, OverflowError) as e:
                raise DataError(f"LEAF data: in {p}, user {u!r} has ragged or non-numeric 'x'/'y' ({e}).") from e
            if x.ndim == 0 or y.ndim != 1 or len(x) != len(y):
                nx = len(x) if x.ndim else "no list of"
                ny = len(y) if y.ndim == 1 else "no list of"
                raise DataError(
                    f"LEAF data: in {p}, user {u!r} has {nx} inputs 'x' but {ny} labels 'y'; "
                    "expected a list of inputs and one label per input."
                )
            if len(y) and (not np.all(np.isfinite(y)) or np.any(y != np.round(y)) or y.min() < 0 or y.max() >= 2**31):
                raise DataError(f"LEAF data: in {p}, user {u!r} has labels that are not integers in 0..2**31-1.")
            if not np.all(np.isfinite(x)):  # JSON's NaN, Infinity, 1e400, or a null input value
                raise DataError(f"LEAF data: in {p}, user {u!r} has NaN, infinite or null inputs; expected numbers.")
            if num_samples is not None and num_samples[j] != len(y):
                raise DataError(
                    f"LEAF data: in {p}, user {u!r} has num_samples {num_samples[j]!r} but {len(y)} examples."
                )
            if len(x):
                x = x.reshape(len(x), -1)
                if features is not None and x.shape[1] != features:
                    raise DataError(
                        f"LEAF data: in {p}, user {u!r} has inputs of {x.shape[1]} values; expected {features}."
                    )
                features = x.shape[1]
            if u not in xs:
                users.append(u)
                xs[u], ys[u] = [], []
            xs[u].append(x)
            ys[u].append(y.astype(np.int64))
    return users, xs, ys, features


def _decode(
    root: Path, train_files: list[Path], test_files: list[Path], image_shape: tuple[int, ...] | None
) -> dict[str, np.ndarray]:
    """Parse the JSON files into the arrays :func:`load_leaf` returns (what the cache keeps).

    Raises:
        DataError: a file is malformed, or a split has no examples.
    """
    features = math.prod(image_shape) if image_shape is not None else None
    tr_users, tr_x, tr_y, features = _read_split(train_files, features)
    te_users, te_x, te_y, _ = _read_split(test_files, features)
    names = list(tr_users) + [u for u in te_users if u not in tr_x]
    index = {u: i for i, u in enumerate(names)}

    def pool(users, xs, ys, where):
        x_parts = [x for u in users for x in xs[u] if len(x)]
        y = np.concatenate([y for u in users for y in ys[u]] or [np.zeros(0, np.int64)])
        groups = np.concatenate(
            [np.full(len(y_), index[u], np.int64) for u in users for y_ in ys[u]] or [np.zeros(0, np.int64)]
        )
        if not x_parts:
            raise DataError(f"LEAF data: no examples in {where}.")
        x = np.concatenate(x_parts)
        if image_shape is not None:
            x = x.reshape(len(x), *image_shape)
        return x, y, groups

    out: dict[str, np.ndarray] = {}
    for split, users, xs, ys in (("train", tr_users, tr_x, tr_y), ("test", te_users, te_x, te_y)):
        out[f"{split}_x"], out[f"{split}_y"], out[f"{split}_groups"] = pool(users, xs, ys, root / split)
    out["names"] = np.array(names, dtype=str)
    out["num_users"] = np.array([len(tr_users), len(te_users)], dtype=np.int64)
    return out


def load_leaf(
    root: str | os.PathLike,
    *,
    name: str = "femnist",
    image_shape: tuple[int, ...] | None = _DEFAULT_SHAPE,  # type: ignore[assignment]
) -> Dataset:
    """Load a LEAF-format data set from ``root/train`` and ``root/test``.

    Args:
        root: folder with ``train/`` and ``test/`` subfolders of ``*.json`` or
            ``*.json.gz`` files.
        name: data set name; ``"femnist"`` fixes ``num_classes`` to 62.
        image_shape: shape of one input, e.g. ``(1, 28, 28)`` (the default for
            ``femnist``); ``None`` keeps flat feature vectors.

    Returns:
        A :class:`Dataset`: ``x`` float32 ``[N, *image_shape]``, ``y`` int64 ``[N]``;
        ``train_groups`` the user index of each training example and ``group_names``
        the user ids (training users first, then any user seen only in test).
        ``info["test_groups"]`` gives the user index of each test example.

    Raises:
        DataError: a folder is missing or empty, or a file is malformed (named).
    """
    root = Path(root).expanduser()
    if image_shape is _DEFAULT_SHAPE:
        image_shape = (1, 28, 28) if name == "femnist" else None
    train_files = _json_files(root / "train")
    test_files = _json_files(root / "test")
    sources = {f"{f.parent.name}/{f.name}": sha256_file(f) for f in train_files + test_files}
    sources["image_shape"] = repr(image_shape)  # the arrays are stored in this shape
    a = cached_arrays(f"leaf-{name}", sources, lambda: _decode(root, train_files, test_files, image_shape))
    train = ArrayData(torch.from_numpy(a["train_x"]), torch.from_numpy(a["train_y"]))
    test = ArrayData(torch.from_numpy(a["test_x"]), torch.from_numpy(a["test_y"]))
    train_groups, test_groups = a["train_groups"], a["test_groups"]
    names = [str(u) for u in a["names"]]
    num_train_users, num_test_users = (int(v) for v in a["num_users"])
    max_label = int(max(train.y.max(), test.y.max()))
    if name == "femnist":
        if max_label >= FEMNIST_CLASSES:
            raise DataError(f"LEAF data: {root} has label {max_label}; FEMNIST labels must be < {FEMNIST_CLASSES}.")
        num_classes = FEMNIST_CLASSES
    else:
        num_classes = max_label + 1

    info = {
        "root": str(root),
        "num_users": len(names),
        "num_train_users": num_train_users,
        "num_test_users": num_test_users,
        "num_train_files": len(train_files),
        "num_test_files": len(test_files),
        "test_groups": test_groups,
    }
    return Dataset(
        name=name,
        train=train,
        test=test,
        num_classes=num_classes,
        train_groups=train_groups,
        group_names=tuple(names),
        ignore_index=None,
        info=info,
    )
