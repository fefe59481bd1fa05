"""Build an a9a-style data set (UCI Adult, 123 binary features) and split it vertically.

LIBSVM's a9a (Platt 1998, via the LIBSVM data page) encodes UCI Adult as 123 binary features: each
categorical attribute one-hot, each continuous attribute quantised into a few ranges and one-hot.
This script rebuilds that layout from the official UCI files; the column order and counts are a9a's
(age 5, workclass 8, fnlwgt 5, education 16, education-num 5, marital-status 7, occupation 14,
relationship 6, race 5, sex 2, capital-gain 2, capital-loss 2, hours-per-week 5, native-country 41).
a9a's exact cut points are not published with it; ours are the training set's quintiles (age,
fnlwgt, education-num, hours-per-week) and zero / non-zero (capital-gain, capital-loss). A missing
value ("?") sets no column, as in a9a.

Vertical split: the guest holds the label and the first seven attributes (60 columns), the host the
other seven (63 columns); both keep the row number as ``id``. Train rows come from ``adult.data``
(32,561), test rows from ``adult.test`` (16,281, ids from 100000).

    python data/a9a/build_a9a.py /work/shared/data/tabular/uci_adult data/a9a
"""

from __future__ import annotations

import gzip
import hashlib
import sys
from pathlib import Path

import numpy as np

ATTRS = ["age", "workclass", "fnlwgt", "education", "education-num", "marital-status", "occupation",
         "relationship", "race", "sex", "capital-gain", "capital-loss", "hours-per-week", "native-country"]
QUINTILES = {"age", "fnlwgt", "education-num", "hours-per-week"}
GUEST_ATTRS = 7


def categories(names_file: Path) -> dict[str, list[str]]:
    out = {}
    for line in names_file.read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ATTRS and "continuous" not in rest:
            out[key] = [v.strip() for v in rest.strip().rstrip(".").split(",")]
    return out


def read(path: Path) -> tuple[list[list[str]], np.ndarray]:
    rows = [[v.strip() for v in line.split(",")] for line in path.read_text().splitlines()
            if line.count(",") == 14]
    labels = np.array([1.0 if r[14].rstrip(".") == ">50K" else 0.0 for r in rows])
    return [r[:14] for r in rows], labels


def encode(rows, cats, cuts) -> tuple[np.ndarray, list[str]]:
    cols, names = [], []
    for j, attr in enumerate(ATTRS):
        values = [r[j] for r in rows]
        if attr in cats:
            levels = cats[attr]
            block = np.array([[v == lv for lv in levels] for v in values], dtype=np.int8)
            names += [f"{attr}={lv}" for lv in levels]
        else:
            x = np.array(values, dtype=np.float64)
            which = np.searchsorted(cuts[attr], x, side="right")
            block = (which[:, None] == np.arange(len(cuts[attr]) + 1)).astype(np.int8)
            names += [f"{attr}#{k}" for k in range(block.shape[1])]
        cols.append(block)
    return np.hstack(cols), names


def write(path: Path, ids, x, names, labels=None) -> str:
    head = ["id"] + (["y"] if labels is not None else []) + names
    lines = [",".join(head)]
    for i, row in enumerate(x):
        lead = [str(ids[i])] + ([str(int(labels[i]))] if labels is not None else [])
        lines.append(",".join(lead + [str(int(v)) for v in row]))
    text = "\n".join(lines) + "\n"
    with open(path, "wb") as f, gzip.GzipFile(fileobj=f, mode="wb", mtime=0, filename="") as gz:
        gz.write(text.encode())
    return hashlib.sha256(text.encode()).hexdigest()


def main(src: Path, out: Path) -> None:
    cats = categories(src / "adult.names")
    train_rows, train_y = read(src / "adult.data")
    test_rows, test_y = read(src / "adult.test")
    cuts = {}
    for j, attr in enumerate(ATTRS):
        if attr in QUINTILES:
            cuts[attr] = np.quantile(np.array([r[j] for r in train_rows], dtype=np.float64), [0.2, 0.4, 0.6, 0.8])
        elif attr not in cats:
            cuts[attr] = np.array([0.0])
    guest_cols = sum(len(cats[a]) if a in cats else len(cuts[a]) + 1 for a in ATTRS[:GUEST_ATTRS])
    for split, rows, y, first in (("train", train_rows, train_y, 0), ("test", test_rows, test_y, 100000)):
        x, names = encode(rows, cats, cuts)
        assert x.shape[1] == 123, x.shape
        ids = np.arange(first, first + len(rows))
        print(split, "guest", write(out / f"a9a_{split}_guest.csv.gz", ids, x[:, :guest_cols], names[:guest_cols], y))
        print(split, "host", write(out / f"a9a_{split}_host.csv.gz", ids, x[:, guest_cols:], names[guest_cols:]))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
