"""The no-model baseline for examples/keyboard: always suggest the most frequent training words.

python examples/keyboard/baseline.py      # writes examples/keyboard/results/baseline.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from keyboard_task import Keyboard  # noqa: E402

KWARGS = {"vocab": 5000, "embed": 32, "hidden": 64, "length": 20, "test_every": 4}  # as keyboard.toml

if __name__ == "__main__":
    ds = Keyboard(**KWARGS).data()
    train, test = ds.train.y[ds.train.y >= 0].numpy(), ds.test.y[ds.test.y >= 0].numpy()
    ranked = np.argsort(-np.bincount(train, minlength=ds.num_classes), kind="stable")
    hits = np.bincount(test, minlength=ds.num_classes)[ranked]
    report = {"command": "python examples/keyboard/baseline.py", "test_targets": int(len(test))}
    report.update(accuracy=float(hits[0] / len(test)), top3=float(hits[:3].sum() / len(test)))
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "baseline.json").write_text(json.dumps(report, indent=2) + "\n")
    print(report)
