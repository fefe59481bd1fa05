"""Federated vs central vs each hospital alone, on the breast-cancer test set (AUC and accuracy), and the
federation again with example-level DP-SGD: each patient's record is protected by an (epsilon, delta)
guarantee against everyone, the server included (the epsilon column: the larger hospital's spend).

    python examples/hospital/compare.py            # writes examples/hospital/results/comparison.{json,md}

Every model is the same MLP trained by `hamrah run` for the same number of passes over its data (see
examples/fedcompare.py), under seeds 0, 1, 2 (the table shows the means); the runs go to runs/compare/hospital/.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from fedcompare import compare, markdown_table, read_config, settings_of, write_report  # noqa: E402

SEEDS = (0, 1, 2)
DPSGD = {"mode": "dpsgd", "clip": 1.0, "noise_multiplier": 1.0, "delta": 1e-4}  # delta well below 1 / patients


def metrics(manifest: dict) -> dict:
    out = {"auc": manifest["metrics"]["auc"], "accuracy": manifest["metrics"]["accuracy"]}
    if "epsilon" in manifest["summary"]:
        out["epsilon"] = manifest["summary"]["epsilon"]
    return out


def main(rounds: int | None = None, seeds=SEEDS, out=Path("runs/compare/hospital"), results=HERE / "results") -> dict:
    cfg = read_config(HERE / "hospital.toml")
    settings = settings_of(cfg, "federated (2 hospitals)")
    settings["federated + DP-SGD (per patient, delta 1e-4)"] = {**cfg, "privacy": DPSGD}
    rows = compare(settings, out, metrics, rounds, seeds)
    report = {"rounds": rounds or cfg["run"]["rounds"], "seeds": list(seeds), "test_examples": 114, "rows": rows}
    return write_report("hospital", report, markdown_table(rows, ["auc", "accuracy", "epsilon"]), results)


if __name__ == "__main__":
    main()
