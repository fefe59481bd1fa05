"""The ``hamrah`` command: the only place that parses arguments and prints to the user."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from hamrah.core.errors import HamrahError


def _cmd_run(args: argparse.Namespace) -> None:
    from hamrah.experiments.config import load_config
    from hamrah.experiments.progress import console, round_progress
    from hamrah.experiments.runner import prepare, run_experiment

    cfg = load_config(args.config)
    if args.rounds is not None:
        cfg = cfg.replace("run", rounds=args.rounds)
    if args.stop_at_target:
        cfg = cfg.replace("run", stop_at_target=True)
    prep = prepare(cfg)
    out = Path(args.out) if args.out else Path("runs") / Path(args.config).stem
    sim_cohort = prep.algorithm.cohort_size(prep.data.num_clients)
    console.print(
        f"hamrah run: {cfg.algorithm.name} / {cfg.model.name} on {cfg.data.dataset} ({cfg.data.partition}), "
        f"{prep.data.num_clients} clients, {sim_cohort} per round, {cfg.run.rounds} rounds -> {out}"
    )
    with round_progress(cfg.run.rounds, log_rounds=not args.quiet) as on_round:
        s = run_experiment(cfg, out, on_round=on_round, prepared=prep)
    rtt = s["rounds_to_target"]
    target = cfg.run.target_accuracy
    console.print(
        f"\n[bold]done[/bold] in {s['wall_s']:.1f} s ({s['seconds_per_round'] * 1000:.0f} ms/round): "
        f"final accuracy {s['final_accuracy']:.4f}, best {s['best_accuracy']:.4f}"
        + (f", rounds to {target:g}: {rtt:.1f}" if rtt is not None else (f", target {target:g} not reached" if target else ""))
        + f"\n{s['num_parameters']:,} parameters. Wrote {out}/metrics.jsonl, summary.json, curve.png"
    )


def _cmd_sweep(args: argparse.Namespace) -> None:
    from rich.table import Table

    from hamrah.experiments.config import load_config
    from hamrah.experiments.progress import console, round_progress
    from hamrah.experiments.sweep import best_point, run_sweep, sweep_rates

    cfg = load_config(args.config)
    if args.rounds is not None:
        cfg = cfg.replace("run", rounds=args.rounds)
    rates = [float(x) for x in args.lrs.split(",")] if args.lrs else sweep_rates(cfg)
    if args.lrs:
        cfg = cfg.replace("sweep", lrs=rates)
    out = Path(args.out) if args.out else Path("runs") / f"{Path(args.config).stem}_sweep"
    console.print(f"hamrah sweep: {len(rates)} learning rates {rates} -> {out}")
    with round_progress(cfg.run.rounds, log_rounds=False) as on_round:
        points = run_sweep(cfg, rates, out, on_start=lambda lr: console.print(f"lr = {lr:g} ..."), on_round=on_round)
    table = Table(title=f"rounds to {cfg.run.target_accuracy}")
    for col in ("lr", "rounds to target", "best accuracy", "final accuracy", "wall s"):
        table.add_column(col, justify="right")
    best = best_point(points)
    for p in points:
        rtt = f"{p.rounds_to_target:.1f}" if p.rounds_to_target is not None else "-"
        mark = " *" if p is best else ""
        table.add_row(f"{p.lr:g}{mark}", rtt, f"{p.best_accuracy:.4f}", f"{p.final_accuracy:.4f}", f"{p.wall_s:.1f}")
    console.print(table)
    console.print(f"best lr: {best.lr:g}. Wrote {out}/sweep.json, sweep.png")


def _cmd_reproduce(args: argparse.Namespace) -> None:
    from hamrah.experiments.reproduce import main as reproduce_main

    reproduce_main(args)


def _cmd_lab(args: argparse.Namespace) -> None:
    from hamrah.experiments.lab import main as lab_main

    lab_main(args)


def _cmd_partition(args: argparse.Namespace) -> None:
    from hamrah.data import describe
    from hamrah.experiments.config import load_config
    from hamrah.experiments.runner import prepare

    prep = prepare(load_config(args.config))
    print(json.dumps(describe(prep.data), indent=2))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hamrah", description="Federated learning: simulate, sweep, reproduce.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="run one experiment from a TOML config")
    p.add_argument("config")
    p.add_argument("--out", help="output folder (default runs/<config name>)")
    p.add_argument("--rounds", type=int, help="override run.rounds")
    p.add_argument("--stop-at-target", action="store_true", help="stop once run.target_accuracy is reached")
    p.add_argument("--quiet", action="store_true", help="no per-round log lines")
    p.set_defaults(func=_cmd_run)
    p = sub.add_parser("sweep", help="learning-rate sweep of a config")
    p.add_argument("config")
    p.add_argument("--lrs", help="comma-separated rates (default: the config's [sweep] section)")
    p.add_argument("--rounds", type=int, help="override run.rounds")
    p.add_argument("--out", help="output folder")
    p.set_defaults(func=_cmd_sweep)
    p = sub.add_parser("reproduce", help="rerun cells of McMahan et al. 2017's tables")
    p.add_argument("paper", choices=["mcmahan"])
    p.add_argument("--quick", action="store_true", help="a subset that finishes in about 15 minutes on 2 cores")
    p.add_argument("--cells", help="comma-separated cell ids (see --list)")
    p.add_argument("--list", action="store_true", help="list the cells and exit")
    p.add_argument("--max-rounds-factor", type=float, default=2.0, help="round cap as a multiple of the paper's count")
    p.add_argument("--max-rounds", type=int, help="absolute round cap per run (for long cells)")
    p.add_argument("--out", default="runs/reproduce_mcmahan", help="output folder")
    p.set_defaults(func=_cmd_reproduce)
    p = sub.add_parser("lab", help="attack x defence matrix (poisoning, backdoors, robust aggregation)")
    p.add_argument("config", nargs="?", default="configs/lab_mnist.toml")
    p.add_argument("--rounds", type=int, help="override run.rounds")
    p.add_argument("--attacks", help="comma-separated subset of lab.attacks")
    p.add_argument("--defences", help="comma-separated subset of lab.defences")
    p.add_argument("--check", action="store_true", help="validate the config (cohort, attacks, trigger) and exit")
    p.add_argument("--out", default="runs/lab", help="folder for lab.json")
    p.add_argument("--doc", default="docs/security.md", help="Markdown file whose results block is rewritten")
    p.add_argument("--img", default="docs/img/security_heatmap.png", help="heatmap PNG")
    p.set_defaults(func=_cmd_lab)
    p = sub.add_parser("partition", help="print a config's partition statistics")
    p.add_argument("config")
    p.set_defaults(func=_cmd_partition)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except HamrahError as e:
        print(f"hamrah: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("hamrah: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
