"""Federated vs central vs each organisation alone: detection rate and false-positive rate per class on
KDDTest+ and KDDTest-21.

    python examples/intrusion/compare.py       # writes examples/intrusion/results/comparison.{json,md}

Every model is the same MLP trained by `hamrah run` for the same number of passes over its data (see
examples/fedcompare.py); the runs go to runs/compare/intrusion/. Each saved model is loaded back into
`Intrusion().model()` (docs/tasks.md, "Getting the model out") and scored on both test files.

Per class c: detection rate DR = P(predicted c | true c) (the class's recall), false-positive rate
FPR = P(predicted c | true class is not c). "any attack": DR = P(predicted an attack | an attack), FPR =
P(predicted an attack | normal) (the alarm rate on normal traffic).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
from fedcompare import compare, markdown_table, read_config, settings_of, write_report  # noqa: E402
from intrusion_task import CLASSES, Intrusion, read_kdd  # noqa: E402

TESTS = {"KDDTest+": False, "KDDTest-21": True}  # name -> only the rows of difficulty < 21


def rates(pred: torch.Tensor, y: torch.Tensor) -> dict:
    """Return accuracy, the attack DR / FPR, and each class's DR / FPR."""
    out = {"accuracy": float((pred == y).float().mean())}
    attack, flagged = y != 0, pred != 0
    out["any attack DR"] = float(flagged[attack].float().mean())
    out["any attack FPR"] = float(flagged[~attack].float().mean())
    for c, name in enumerate(CLASSES):
        out[f"{name} DR"] = float((pred[y == c] == c).float().mean())
        out[f"{name} FPR"] = float((pred[y != c] == c).float().mean())
    return out


def scorer(hidden: int):
    tests = {name: read_kdd("KDDTest+", hardest).to_array_data() for name, hardest in TESTS.items()}

    def metrics(manifest: dict) -> dict:
        model = Intrusion(hidden).model()
        model.load_state_dict(load_file(str(Path(manifest["run_dir"]) / "model.safetensors")))
        out = {}
        with torch.no_grad():
            for name, test in tests.items():
                out.update({f"{name} {k}": v for k, v in rates(model(test.x).argmax(1), test.y).items()})
        assert abs(out["KDDTest+ accuracy"] - manifest["metrics"]["accuracy"]) < 1e-6  # the run's own score
        return out

    return metrics


def tables(rows: list[dict]) -> str:
    parts = []
    for test in TESTS:
        cells = []
        for r in rows:
            cell = {"setting": r["setting"], "accuracy": r[f"{test} accuracy"]}
            for name in ("any attack", *CLASSES):
                cell[name] = f"{r[f'{test} {name} DR']:.3f} / {r[f'{test} {name} FPR']:.3f}"
            cells.append(cell)
        head = f"**{test}** (each class: DR / FPR)\n\n"
        parts.append(head + markdown_table(cells, ["accuracy", "any attack", *CLASSES]))
    return "\n\n".join(parts)


def main(rounds: int | None = None, seeds=(0,), out=Path("runs/compare/intrusion"), results=HERE / "results") -> dict:
    cfg = read_config(HERE / "intrusion.toml")
    rows = compare(
        settings_of(cfg, "federated (4 organisations)"), out, scorer(cfg["task"]["kwargs"]["hidden"]), rounds, seeds
    )
    report = {"rounds": rounds or cfg["run"]["rounds"], "seeds": list(seeds), "rows": rows}
    return write_report("intrusion", report, tables(rows), results)


if __name__ == "__main__":
    main()
