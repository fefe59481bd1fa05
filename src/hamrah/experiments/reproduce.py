"""Rerun cells of McMahan et al. 2017's Tables 1 and 2 with the paper's protocol.

Per cell: the paper's partition, model, C, E, B and target; the learning rate tuned on the paper's
multiplicative grid (steps of 10^(1/3)); each run stops at the target or at a round cap; the
rounds-to-target of the best rate is compared with the paper's number.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from hamrah.core.errors import ConfigError
from hamrah.experiments.config import from_dict
from hamrah.experiments.plots import plot_curves, plot_series
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


# McMahan et al.'s Table 1 for the 2NN (E = 1): rounds to 97% per (partition, B) and C; "-" cells
# (B = inf at C >= 0.5) were not run in the paper.
PAPER_TABLE1_2NN = {
    ("iid", 10): {0.0: 316, 0.1: 87, 0.2: 77, 0.5: 75, 1.0: 70},
    ("iid", None): {0.0: 1455, 0.1: 1474, 0.2: 1658},
    ("shards", 10): {0.0: 3275, 0.1: 664, 0.2: 619, 0.5: 443, 1.0: 380},
    ("shards", None): {0.0: 4278, 0.1: 1796, 0.2: 1528},
}


def _table1_cell(partition: str, batch_size: int | None, c: float, paper_rounds: float) -> Cell:
    """The 2NN cell of Table 1 at (partition, B, C); the C = 0.1 ids carry no C suffix."""
    name = f"2nn-{'iid' if partition == 'iid' else 'noniid'}-e1-b{batch_size or 'inf'}"
    # Each grid lists its likeliest best rate first: with pruning, the others then stop early.
    if batch_size is None:
        lrs: tuple[float, ...] = (0.464, 1.0, 2.15)
    elif c == 0.1:
        lrs = (0.0464, 0.1, 0.215, 0.464)
    elif c == 0.0:  # one client a round: its model becomes the global one
        lrs = (0.1, 0.0464, 0.215)
    elif partition == "shards":  # 0.464 diverged at C = 0.1 (dead ReLUs); widening tries it if 0.215 wins
        lrs = (0.215, 0.1)
    else:
        lrs = (0.215, 0.1, 0.464)
    return Cell(
        name if c == 0.1 else f"{name}-c{c:g}",
        f"Table 1 (C={c:g})",
        "mnist",
        partition,
        "2nn",
        "fedavg",
        1,
        batch_size,
        0.97,
        paper_rounds,
        lrs,
        client_fraction=c,
        eval_every=5 if paper_rounds > 1000 else 1,
    )


TABLE1 = tuple(
    _table1_cell(partition, b, c, rounds)
    for (partition, b), row in PAPER_TABLE1_2NN.items()
    for c, rounds in row.items()
)
# Table 2's CNN rows on IID data (C = 0.1, 99%): rounds per (E, B) beyond FedSGD (E = 1, B = inf).
PAPER_TABLE2_CNN_IID = {
    (5, None): 179,
    (1, 50): 65,
    (20, None): 234,
    (1, 10): 34,
    (5, 50): 29,
    (20, 50): 32,
    (5, 10): 20,
    (20, 10): 18,
}
TABLE2_CNN_IID = tuple(
    Cell(
        f"cnn-iid-e{e}-b{b or 'inf'}",
        "Table 2",
        "mnist",
        "iid",
        "cnn",
        "fedavg",
        e,
        b,
        0.99,
        rounds,
        (0.1, 0.215) if (e, b) == (5, 10) else (0.215, 0.1, 0.464),  # (5, 10): the grid of its committed run
        eval_every=5 if rounds > 100 else 1,
    )
    for (e, b), rounds in PAPER_TABLE2_CNN_IID.items()
)
CELLS = {
    c.id: c
    for c in [
        *TABLE1,
        *TABLE2_CNN_IID,
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
WIDEN = 2  # grid steps a cell's sweep may add beyond an edge where its best rate lies
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
            "sweep": {"lrs": list(cell.lrs), "widen": WIDEN, "prune": True},
        }
    )


def round_cap(cell: Cell, factor: float, max_rounds: int | None = None) -> int:
    """Rounds each run of ``cell`` may take: ``max_rounds`` when given, else ``factor`` x the paper's count."""
    return max_rounds if max_rounds is not None else max(int(cell.paper_rounds * factor), 10)


def reproduce_cell(cell: Cell, out_dir: Path, max_rounds: int, log=print) -> dict:
    """Tune the learning rate of one cell on its grid; return the paper-vs-hamrah row."""
    cfg = cell_config(cell, max_rounds)
    start = time.perf_counter()
    every = max(max_rounds // 10, 1)

    def on_round(rec) -> None:  # a line every tenth of the cap: a rate can run for an hour
        if rec.round % every == 0 and rec.test_accuracy is not None:
            log(f"    round {rec.round} of at most {max_rounds}: accuracy {rec.test_accuracy:.4f}")

    points = run_sweep(
        cfg, list(cell.lrs), out_dir / cell.id, on_start=lambda lr: log(f"  {cell.id}: lr {lr:g}"), on_round=on_round
    )
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
        "pruned": [p.lr for p in points if p.pruned],  # stopped once they could not be the best
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


def _by_setting(rows: list[dict]) -> dict:
    """(partition, B, C) -> hamrah's rounds to target, from report rows."""
    return {(r["partition"], r["batch_size"], r["client_fraction"]): r["rounds_to_target"] for r in rows}


def table1_markdown(rows: list[dict]) -> str:
    """Lay the Table 1 rows out as the paper does (one row per C, one column per partition and B):
    rounds to 97% for the paper and hamrah, each with its speed-up over C = 0 in parentheses."""
    found = _by_setting(rows)
    columns = list(PAPER_TABLE1_2NN)
    names = [f"2NN {'IID' if p == 'iid' else 'non-IID'} B={b or 'inf'}" for p, b in columns]
    lines = ["| C | " + " | ".join(f"{n}: paper | hamrah" for n in names) + " |", "|---|" + "---|---|" * len(names)]

    def shown(rounds: float | None, base: float | None) -> str:
        if rounds is None:
            return "not reached"
        return f"{rounds:.1f}" + (f" ({base / rounds:.1f}x)" if base else "")

    for c in sorted({c for row in PAPER_TABLE1_2NN.values() for c in row}):
        cells = []
        for key in columns:
            paper = PAPER_TABLE1_2NN[key].get(c)
            if paper is None:
                cells += ["-", "-"]
                continue
            ours = found.get((*key, c), "not run")
            cells.append(shown(paper, PAPER_TABLE1_2NN[key][0.0] if c else None))
            base = found.get((*key, 0.0)) if c else None
            cells.append(ours if isinstance(ours, str) else shown(ours, base))
        lines.append(f"| {c:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_table1(rows: list[dict], path: Path) -> None:
    """Rounds to 97% against C, hamrah (solid) and the paper (dashed), one colour per partition and B."""
    found = _by_setting(rows)
    series: dict = {}
    for i, ((partition, b), paper) in enumerate(PAPER_TABLE1_2NN.items()):
        name = f"{'IID' if partition == 'iid' else 'non-IID'} B={b or 'inf'}"
        ours = [(c, found.get((partition, b, c))) for c in paper]
        ours = [(f"{c:g}", r) for c, r in ours if r is not None]
        series[f"hamrah {name}"] = ([c for c, _ in ours], [r for _, r in ours], f"o-C{i}")
        series[f"paper {name}"] = ([f"{c:g}" for c in paper], list(paper.values()), f"s--C{i}")
    plot_series(
        series,
        path,
        xlabel="C (share of clients per round; 0: one client)",
        ylabel="rounds to 97% test accuracy",
        title="McMahan et al. Table 1, 2NN on MNIST, E = 1",
        log_y=True,
    )


def _write_report(rows: list[dict], out: Path) -> None:
    """``results.json``, ``results.md`` and, with Table 1 cells among the rows, ``table1.png``."""
    (out / "results.json").write_text(json.dumps(rows, indent=2) + "\n")
    table1 = [r for r in rows if r["table"].startswith("Table 1")]
    (out / "results.md").write_text(markdown_table(rows) + ("\n" + table1_markdown(table1) if table1 else ""))
    if table1:
        plot_table1(table1, out / "table1.png")


_ROW_KEYS = frozenset(
    [
        "id",
        "table",
        "partition",
        "client_fraction",
        "epochs",
        "batch_size",
        "target",
        "paper_rounds",
        "rounds_to_target",
        "ratio_to_paper",
        "best_lr",
        "best_accuracy",
        "wall_s",
        "max_rounds",
    ]
)  # what a report needs of each row


def _read_rows(paths: str) -> list[dict]:
    """The rows of earlier runs' ``results.json`` files (comma-separated), the later file's row winning per cell."""
    rows: dict[str, dict] = {}
    for path in paths.split(","):
        try:
            found = json.loads(Path(path).read_text())
        except (OSError, ValueError) as e:
            raise ConfigError(f"--render {path}: {e}; expected the results.json a reproduce run wrote") from None
        for i, r in enumerate(found if isinstance(found, list) else [found]):
            missing = sorted(_ROW_KEYS - set(r)) if isinstance(r, dict) else ["(not an object)"]
            if missing:
                raise ConfigError(
                    f"--render {path}: row {i} lacks {', '.join(missing)}; expected the rows a reproduce run wrote"
                )
            rows[r["id"]] = r
    if not rows:
        raise ConfigError(f"--render {paths}: no rows; expected the rows a reproduce run wrote")
    return list(rows.values())


def main(args: argparse.Namespace) -> None:
    """CLI entry: ``hamrah reproduce mcmahan [--quick | --table1 | --cells a,b | --render r.json] [--list]``."""
    if args.list:
        for c in CELLS.values():
            print(f"{c.id:24s} {c.table:16s} paper {c.paper_rounds:g} rounds to {c.target:g}")
        return
    if not (math.isfinite(args.max_rounds_factor) and args.max_rounds_factor > 0):
        raise ConfigError(f"--max-rounds-factor {args.max_rounds_factor}: expected a positive finite number")
    if args.max_rounds is not None and args.max_rounds < 1:
        raise ConfigError(f"--max-rounds {args.max_rounds}: expected an integer >= 1")
    given = [f"--{k.replace('_', '-')}" for k in ("quick", "table1", "cells", "render") if getattr(args, k, None)]
    if len(given) > 1:
        raise ConfigError(
            f"{' and '.join(given)} each choose what to do; expected one of --quick, --table1, --cells, --render"
        )
    if args.cells is not None:
        ids = [x.strip() for x in args.cells.split(",") if x.strip()]
        if not ids:
            raise ConfigError(f"--cells {args.cells!r}: expected comma-separated cell ids (see --list)")
    else:
        ids = [c.id for c in TABLE1] if args.table1 else list(QUICK if args.quick else CELLS)
    unknown = [i for i in ids if i not in CELLS]
    if unknown:
        raise ConfigError(f"--cells: unknown cell(s) {', '.join(unknown)}; expected some of {', '.join(CELLS)}")
    out = Path(args.out)
    if args.render:  # no training: one report of rows already computed (read before anything is made)
        rows = _read_rows(args.render)
        out.mkdir(parents=True, exist_ok=True)
        _write_report(rows, out)
        print(f"Wrote {out}/results.json, results.md" + (" and table1.png" if (out / "table1.png").exists() else ""))
        return
    from hamrah.experiments.progress import work_progress

    out.mkdir(parents=True, exist_ok=True)
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
            _write_report(rows, out)
            r = rows[-1]
            step(f"  -> {r['rounds_to_target']} rounds (paper {cell.paper_rounds:g}), best lr {r['best_lr']:g}")
    print("\n" + (out / "results.md").read_text())
    print(f"Wrote {out}/results.json, results.md and one PNG per cell")
