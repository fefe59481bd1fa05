"""Federated vs central vs each bank alone, on the credit-default test set (AUC and accuracy).

    python examples/credit/compare.py            # writes examples/credit/results/comparison.{json,md}

Every model is the same MLP trained by `hamrah run` for the same number of passes over its data (see
examples/fedcompare.py), under seeds 0, 1, 2 (the table shows the means); the runs go to runs/compare/credit/.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from fedcompare import compare, markdown_table, read_config, settings_of, write_report  # noqa: E402

SEEDS = (0, 1, 2)


def metrics(manifest: dict) -> dict:
    return {"auc": manifest["metrics"]["auc"], "accuracy": manifest["metrics"]["accuracy"]}


def main(rounds: int | None = None, seeds=SEEDS, out=Path("runs/compare/credit"), results=HERE / "results") -> dict:
    cfg = read_config(HERE / "credit.toml")
    rows = compare(settings_of(cfg, "federated (3 banks)"), out, metrics, rounds, seeds)
    report = {"rounds": rounds or cfg["run"]["rounds"], "seeds": list(seeds), "test_examples": 6000, "rows": rows}
    return write_report("credit", report, markdown_table(rows, ["auc", "accuracy"]), results)


if __name__ == "__main__":
    main()
