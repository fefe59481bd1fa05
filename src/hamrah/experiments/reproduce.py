"""Rerun cells of McMahan et al. 2017's Tables 1 and 2 with the paper's protocol.

Per cell: the paper's partition, model, C, E, B and target; the learning rate tuned on the paper's
multiplicative grid (steps of 10^(1/3)); each run stops at the target or at a round cap; the
rounds-to-target of the best rate is compared with the paper's number.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from hamrah.core.errors import ConfigError
from hamrah.experiments.config import from_dict
from hamrah.experiments.plots import plot_curves
from hamrah.experiments.sweep import best_point, run_sweep


@dataclass(frozen=True)
class Cell:
    """One cell of the paper's tables."""

    id: str
    table: str
    dataset: str
    partition: str
    model: str
    algorithm: str
    epochs: int
    batch_size: int | None
    target: float
    paper_rounds: float
    lrs: tuple[float, ...]
    client_fraction: float = 0.1
    eval_every: int = 1


CELLS = {
    c.id: c
    for c in [
        Cell(
            "2nn-iid-e1-b10",
            "Table 1 (C=0.1)",
            "mnist",
            "iid",
            "2nn",
            "fedavg",
            1,
            10,
            0.97,
            87,
            (0.0464, 0.1, 0.215, 0.464),
        ),
        Cell(
            "2nn-noniid-e1-b10",
            "Table 1 (C=0.1)",
            "mnist",
            "shards",
            "2nn",
            "fedavg",
            1,
            10,
            0.97,
            664,
            (0.0464, 0.1, 0.215, 0.464),
        ),
        Cell(
            "2nn-iid-e1-binf",
            "Table 1 (C=0.1)",
            "mnist",
            "iid",
            "2nn",
            "fedavg",
            1,
            None,
            0.97,
            1474,
            (0.464, 1.0, 2.15),
            eval_every=5,
        ),
        Cell("cnn-iid-e5-b10", "Table 2", "mnist", "iid", "cnn", "fedavg", 5, 10, 0.99, 20, (0.1, 0.215)),
        Cell("cnn-iid-e1-b10", "Table 2", "mnist", "iid", "cnn", "fedavg", 1, 10, 0.99, 34, (0.0464, 0.1, 0.215)),
        Cell(
            "cnn-noniid-e5-b10",
            "Table 2",
            "mnist",
            "shards",
            "cnn",
            "fedavg",
            5,
            10,
            0.99,
            229,
            (0.0464, 0.1),
            eval_every=2,
        ),
        Cell("cnn-iid-fedsgd", "Table 2", "mnist", "iid", "cnn", "fedsgd", 1, None, 0.99, 626, (0.215,), eval_every=5),
        Cell(
            "lstm-noniid-e1-b10",
            "Table 2",
            "shakespeare",
            "natural",
            "char_lstm",
            "fedavg",
            1,
            10,
            0.54,
            164,
            (1.47,),
            eval_every=10,
        ),
    ]
}
QUICK = ("2nn-iid-e1-b10", "2nn-noniid-e1-b10", "cnn-iid-e5-b10")


def cell_config(cell: Cell, max_rounds: int, seed: int = 0):
    """Return the experiment config of a cell, capped at ``max_rounds``."""
    return from_dict(
        {
            "data": {
                "dataset": cell.dataset,
                "partition": cell.partition,
                "num_clients": 0 if cell.partition == "natural" else 100,
                "shards_per_client": 2,
            },
            "model": {"name": cell.model},
            "algorithm": {
                "name": cell.algorithm,
                "client_fraction": cell.client_fraction,
                "local_epochs": cell.epochs,
                "batch_size": "inf" if cell.batch_size is None else cell.batch_size,
                "lr": cell.lrs[0],
            },
            "run": {
                "rounds": max_rounds,
                "target_accuracy": cell.target,
                "eval_every": cell.eval_every,
                "seed": seed,
                "stop_at_target": True,
            },
            "sweep": {"lrs": list(cell.lrs)},
        }
    )


def round_cap(cell: Cell, factor: float, max_rounds: int | None = None) -> int:
    """Rounds each run of ``cell`` may take: ``max_rounds`` when given, else ``factor`` x the paper's count."""
    return max_rounds if max_rounds is not None else max(int(cell.paper_rounds * factor), 10)


def reproduce_cell(cell: Cell, out_dir: Path, max_rounds: int, log=print) -> dict:
    """Tune the learning rate of one cell on its grid; return the paper-vs-hamrah row."""
    cfg = cell_config(cell, max_rounds)
    start = time.perf_counter()
    points = run_sweep(cfg, list(cell.lrs), out_dir / cell.id, on_start=lambda lr: log(f"  {cell.id}: lr {lr:g}"))
    best = best_point(points)
    ours = best.rounds_to_target
    row = {
        **{k: v for k, v in asdict(cell).items() if k != "lrs"},
        "lr_grid": list(cell.lrs),
        "best_lr": best.lr,
        "rounds_to_target": ours,
        "max_rounds": max_rounds,
        "best_accuracy": best.best_accuracy,
        "ratio_to_paper": None if ours is None else ours / cell.paper_rounds,
        "within_30_percent": None if ours is None else abs(ours / cell.paper_rounds - 1) <= 0.30,
        "per_lr": {f"{p.lr:g}": p.rounds_to_target for p in points},
        "wall_s": round(time.perf_counter() - start, 1),
    }
    plot_curves(
        {f"lr={p.lr:g}": p.curve for p in points},
        out_dir / f"{cell.id}.png",
        title=f"{cell.id} (paper: {cell.paper_rounds:g} rounds to {cell.target:g})",
        target=cell.target,
    )
    return row


def markdown_table(rows: list[dict]) -> str:
    """Render paper-vs-hamrah rows as a Markdown table."""
    lines = [
        "| cell | source | E | B | target | paper rounds | hamrah rounds | ratio | best lr | best accuracy | wall s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ours = f"not reached in {r['max_rounds']}" if r["rounds_to_target"] is None else f"{r['rounds_to_target']:.1f}"
        ratio = "-" if r["ratio_to_paper"] is None else f"{r['ratio_to_paper']:.2f}"
        b = "inf" if r["batch_size"] is None else r["batch_size"]
        lines.append(
            f"| {r['id']} | {r['table']} | {r['epochs']} | {b} | {r['target']} | {r['paper_rounds']:g} | "
            f"{ours} | {ratio} | {r['best_lr']:g} | {r['best_accuracy']:.4f} | {r['wall_s']} |"
        )
    return "\n".join(lines) + "\n"


def main(args: argparse.Namespace) -> None:
    """CLI entry: ``hamrah reproduce mcmahan [--quick] [--cells a,b] [--list]``."""
    if args.list:
        for c in CELLS.values():
            print(f"{c.id:22s} {c.table:16s} paper {c.paper_rounds:g} rounds to {c.target:g}")
        return
    ids = args.cells.split(",") if args.cells else list(QUICK if args.quick else CELLS)
    unknown = [i for i in ids if i not in CELLS]
    if unknown:
        raise ConfigError(f"--cells: unknown cell(s) {', '.join(unknown)}; expected some of {', '.join(CELLS)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from hamrah.experiments.progress import work_progress

    rows = []
    with work_progress(len(ids), "reproduce", "cells") as step:  # a bar on a terminal, plain lines otherwise
        for cid in ids:
            cell = CELLS[cid]
            cap = round_cap(cell, args.max_rounds_factor, args.max_rounds)
            print(
                f"{cid}: paper {cell.paper_rounds:g} rounds to {cell.target:g}; grid {cell.lrs}; cap {cap} rounds",
                flush=True,
            )
            rows.append(reproduce_cell(cell, out, cap))
            (out / "results.json").write_text(json.dumps(rows, indent=2) + "\n")
            (out / "results.md").write_text(markdown_table(rows))
            r = rows[-1]
            step(f"  -> {r['rounds_to_target']} rounds (paper {cell.paper_rounds:g}), best lr {r['best_lr']:g}")
    print("\n" + markdown_table(rows))
    print(f"Wrote {out}/results.json, results.md and one PNG per cell")
