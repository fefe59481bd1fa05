"""Credit-card default across three banks: UCI *default of credit card clients* (Taiwan, 2005), 30,000 customers.

The bundled copy is FATE's vertical split of the table (`data/vertical/default_credit_hetero_{guest,host}.csv.gz`,
23 features standardised by FATE, label `y` = default next month); joined on `id` it is the whole table again
(the feature names below are the UCI columns each `x` column holds). Horizontally, across banks: each bank's
customers share one education level (EDUCATION: graduate school, university, high school and other), so the
banks differ in who they lend to and how often those customers default. Every fifth customer (`id % 5 == 0`) is
held out as the test set.
"""

from __future__ import annotations

import csv
import gzip
from pathlib import Path

import numpy as np
from torch import nn

import hamrah
from hamrah.data import Examples, Field, Schema

DATA = Path(__file__).resolve().parents[2] / "data" / "vertical"
GUEST = ["PAY_6", *(f"BILL_AMT{i}" for i in range(1, 7)), *(f"PAY_AMT{i}" for i in range(1, 7))]  # x0..x12
HOST = ["LIMIT_BAL", "SEX", "EDUCATION", "MARRIAGE", "AGE", "PAY_0", "PAY_2", "PAY_3", "PAY_4", "PAY_5"]  # x0..x9
FEATURES = GUEST + HOST
SCHEMA = Schema((*(Field(f, "float32") for f in FEATURES), Field("default", "int64")), label="default")
BANKS = ("graduate_school", "university", "high_school_and_other")


def read(name: str) -> dict[str, np.ndarray]:
    with gzip.open(DATA / f"default_credit_hetero_{name}.csv.gz", "rt", newline="") as f:
        rows = list(csv.reader(f))
    return {h: np.array([r[i] for r in rows[1:]], dtype=np.float64) for i, h in enumerate(rows[0])}


class Credit(hamrah.BinaryTask):
    name = "credit"

    def __init__(self, hidden: int = 32):
        self.hidden = hidden

    def model(self) -> nn.Module:
        return nn.Sequential(nn.Linear(len(FEATURES), self.hidden), nn.ReLU(), nn.Linear(self.hidden, 2))

    def data(self):
        guest, host = read("guest"), read("host")
        assert (guest["id"] == host["id"]).all()  # the two parties' rows are aligned on id
        cols = {f: guest[f"x{i}"] for i, f in enumerate(GUEST)} | {f: host[f"x{i}"] for i, f in enumerate(HOST)}
        cols["default"] = guest["y"].astype(np.int64)
        levels = np.unique(cols["EDUCATION"])  # standardised codes 0..6 in order: 1 = graduate, 2 = university
        bank = np.minimum(np.searchsorted(levels, cols["EDUCATION"]), 3) - 1
        bank[bank < 0] = 2  # code 0 (undocumented) goes with "other"
        test = guest["id"].astype(np.int64) % 5 == 0
        train = Examples.from_columns(
            {k: v[~test] for k, v in cols.items()}, SCHEMA, groups=bank[~test], group_names=BANKS
        )
        return train, Examples.from_columns({k: v[test] for k, v in cols.items()}, SCHEMA)
