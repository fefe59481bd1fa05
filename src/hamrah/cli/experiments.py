"""``hamrah`` commands that run experiments on one machine: run, evaluate, predict, new, sweep, reproduce,
lab, partition, dashboard."""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
from pathlib import Path

from hamrah.core.errors import HamrahError
from hamrah.core.files import check_writable_file, check_writable_folder


def _cmd_run(args: argparse.Namespace) -> None:
    from hamrah.core.errors import ConfigError
    from hamrah.experiments.config import load_config, user_task
    from hamrah.experiments.export import holds_a_run
    from hamrah.experiments.progress import console, round_progress
    from hamrah.experiments.runner import prepare, run_experiment

    cfg = load_config(args.config)
    if args.rounds is not None:
        cfg = cfg.replace("run", rounds=args.rounds)
    if args.stop_at_target:
        cfg = cfg.replace("run", stop_at_target=True)
    out = Path(args.out) if args.out else Path("runs") / Path(args.config).stem
    check_writable_folder(out, "--out")
    if args.resume and args.overwrite:
        raise ConfigError("--resume goes on with the run in --out and --overwrite replaces it; expected one of the two")
    if holds_a_run(out) and not (args.overwrite or args.resume):
        raise ConfigError(
            f"{out} holds a previous run; pass --resume to go on from its checkpoint, --overwrite to replace it, "
            "or choose another --out"
        )
    prep = prepare(cfg)
    sim_cohort = prep.algorithm.cohort_size(prep.data.num_clients)
    what = f"task {prep.task.task_name}" if user_task(cfg) else f"{cfg.model.name} on {cfg.data.dataset}"
    console.print(
        f"hamrah run: {cfg.algorithm.name} / {what} ({cfg.data.partition}), "
        f"{prep.data.num_clients} clients, {sim_cohort} per round, {cfg.run.rounds} rounds -> {out}"
    )
    with round_progress(cfg.run.rounds, log_rounds=not args.quiet) as on_round:
        s = run_experiment(cfg, out, on_round=on_round, prepared=prep, plot=not args.no_plot, resume=args.resume)
    rtt = s["rounds_to_target"]
    target = cfg.run.target_accuracy
    console.print(
        f"\n[bold]done[/bold] in {s['wall_s']:.1f} s ({s['seconds_per_round'] * 1000:.0f} ms/round): "
        + _final_scores(s)
        + (
            f", rounds to {target:g}: {rtt:.1f}"
            if rtt is not None
            else (f", target {target:g} not reached" if target else "")
        )
        + f"\n{s['num_parameters']:,} parameters. Wrote {out}/metrics.jsonl, summary.json, model.safetensors"
        + ("" if args.no_plot else ", curve.png")
    )


def _final_scores(summary: dict) -> str:
    """The done line's scores: final and best accuracy (or the final test loss where the task has no
    accuracy), then the task's own metrics (``final_auc``, ``final_mse``, ...)."""
    if summary["final_accuracy"] is not None:
        text = f"final accuracy {summary['final_accuracy']:.4f}, best {summary['best_accuracy']:.4f}"
    elif summary["final_loss"] is not None:
        text = f"final test loss {summary['final_loss']:.4f}"
    else:
        text = "no round evaluated"
    own = {
        k[6:]: v
        for k, v in summary.items()
        if k.startswith("final_") and k not in ("final_accuracy", "final_loss") and isinstance(v, (int, float))
    }
    return text + "".join(f", {k} {v:.4f}" for k, v in own.items())


def _saved_model(args: argparse.Namespace):
    from hamrah.experiments.config import load_config
    from hamrah.experiments.export import read_model
    from hamrah.experiments.runner import resolve_task

    cfg = load_config(args.config)
    task, dataset = resolve_task(cfg)
    model, manifest = read_model(args.model, task)
    return cfg, task, dataset, model, manifest


def _cmd_evaluate(args: argparse.Namespace) -> None:
    from hamrah.algorithms.local import evaluate_metrics
    from hamrah.core.metrics import metric_values

    _, task, dataset, model, manifest = _saved_model(args)
    params = dict(model.named_parameters())
    metrics = metric_values(evaluate_metrics(model, params, dataset.test, dataset.ignore_index, task))
    note = "" if manifest.get("task_digest") == task.digest() else " (the task's code changed since the run)"
    print(json.dumps({"task": task.task_name, "test_examples": len(dataset.test), **metrics}))
    if note:
        print(
            f"note: task digest {task.digest()} differs from the model's {manifest.get('task_digest')}", file=sys.stderr
        )


def _cmd_predict(args: argparse.Namespace) -> None:
    from hamrah.experiments.export import predict_csv

    check_writable_file(args.output, "--output")
    _, task, _, model, manifest = _saved_model(args)
    keep = [c.strip() for c in args.keep.split(",") if c.strip()] if args.keep else ()
    n = predict_csv(model, task, manifest, args.csv, args.output, keep=keep)
    print(f"{args.output}: predictions for {n} rows")


def _cmd_new(args: argparse.Namespace) -> None:
    from hamrah.project import new_project

    check_writable_folder(args.dir, "--dir")
    root = new_project(args.name, args.template, args.dir)
    article = "an" if args.template[0] in "aeiou" else "a"
    runs = f"runs/{root.name.replace('-', '_')}"
    where = shlex.quote(str(root))  # a --dir with spaces: the command copies as printed
    print(
        f"{root}: {article} {args.template} project. Next: cd {where} && hamrah run sim.toml --out {runs} (README.md)"
    )


def _cmd_sweep(args: argparse.Namespace) -> None:
    from rich.table import Table

    from hamrah.experiments.config import load_config
    from hamrah.experiments.progress import console, round_progress
    from hamrah.experiments.sweep import best_point, run_sweep, sweep_rates

    cfg = load_config(args.config)
    if args.rounds is not None:
        cfg = cfg.replace("run", rounds=args.rounds)
    rates = _rates(args.lrs) if args.lrs else sweep_rates(cfg)
    if args.lrs:
        cfg = cfg.replace("sweep", lrs=rates)
    out = Path(args.out) if args.out else Path("runs") / f"{Path(args.config).stem}_sweep"
    check_writable_folder(out, "--out")
    console.print(f"hamrah sweep: {len(rates)} learning rates {rates} -> {out}", markup=False)
    with round_progress(cfg.run.rounds, log_rounds=False) as on_round:
        points = run_sweep(cfg, rates, out, on_start=lambda lr: console.print(f"lr = {lr:g} ..."), on_round=on_round)
    table = Table(title=f"rounds to {cfg.run.target_accuracy}")
    for col in ("lr", "rounds to target", "best accuracy", "final accuracy", "wall s"):
        table.add_column(col, justify="right")
    best = best_point(points)
    for p in points:
        rtt = f"{p.rounds_to_target:.1f}" if p.rounds_to_target is not None else "-"
        rtt = f"> {p.rounds_run} (pruned)" if p.pruned else rtt
        mark = " *" if p is best else ""
        table.add_row(f"{p.lr:g}{mark}", rtt, f"{p.best_accuracy:.4f}", f"{p.final_accuracy:.4f}", f"{p.wall_s:.1f}")
    console.print(table)
    console.print(f"best lr: {best.lr:g}. Wrote {out}/sweep.json, sweep.png")


def _rates(text: str) -> list[float]:
    """``--lrs``: comma-separated positive finite learning rates."""
    try:
        rates = [float(x) for x in text.split(",")]
    except ValueError:
        rates = []
    if not rates or not all(math.isfinite(r) and r > 0 for r in rates):
        raise HamrahError(f"--lrs {text}: expected comma-separated positive finite numbers, e.g. 0.05,0.1,0.2")
    return rates


def _cmd_reproduce(args: argparse.Namespace) -> None:
    from hamrah.experiments.reproduce import main as reproduce_main

    check_writable_folder(args.out, "--out")
    reproduce_main(args)


def _cmd_lab(args: argparse.Namespace) -> None:
    from hamrah.experiments.lab import main as lab_main

    check_writable_folder(args.out, "--out")
    if args.update_doc:  # refused now, not after the whole matrix has trained
        check_writable_file(args.doc, "--doc")
        check_writable_file(args.img, "--img")
    lab_main(args)


def _cmd_partition(args: argparse.Namespace) -> None:
    from hamrah.data import describe
    from hamrah.experiments.config import load_config
    from hamrah.experiments.runner import prepare

    prep = prepare(load_config(args.config))
    print(json.dumps(describe(prep.data), indent=2))


def _cmd_dashboard(args: argparse.Namespace) -> None:
    import time

    from hamrah.observe.dashboard import DashboardConfig, serve_folder
    from hamrah.observe.dashboard.config import check_exposure

    if not 0 <= args.port <= 65535:
        raise HamrahError(f"--port {args.port}: expected a port in 0..65535 (0: any free port)")
    cfg = DashboardConfig(
        enabled=True, host=args.host, port=args.port, token_file=args.token_file, allow_remote=args.allow_remote
    )
    check_exposure(cfg, cli=True)
    server = serve_folder(args.runs_dir, cfg)
    print(f"dashboard of {args.runs_dir} on {server.url} (Ctrl-C stops it)", flush=True)
    try:
        while True:
            time.sleep(3600)
    finally:
        server.stop()


def _add_dashboard_command(sub) -> None:
    p = sub.add_parser("dashboard", help="serve a read-only live dashboard of the runs under a folder")
    p.add_argument("runs_dir", help="folder of runs: hamrah run / sweep / server output folders")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (non-loopback: needs --allow-remote)")
    p.add_argument("--port", type=int, default=8765, help="port (0: any free port)")
    p.add_argument("--token-file", help="sha256 digests of viewer tokens, one per line (hamrah tokens --server-file)")
    p.add_argument("--allow-remote", action="store_true", help="listen on a non-loopback --host (needs --token-file)")
    p.set_defaults(func=_cmd_dashboard)


def add_commands(sub) -> None:
    """Register this module's commands on the ``hamrah`` parser's subparsers."""
    p = sub.add_parser("run", help="run one experiment from a TOML config")
    p.add_argument("config")
    p.add_argument("--out", help="output folder (default runs/<config name>)")
    p.add_argument("--rounds", type=int, help="override run.rounds")
    p.add_argument("--stop-at-target", action="store_true", help="stop once run.target_accuracy is reached")
    p.add_argument("--quiet", action="store_true", help="no per-round log lines")
    p.add_argument("--no-plot", action="store_true", help="write no curve.png (matplotlib is not imported)")
    p.add_argument("--overwrite", action="store_true", help="replace a previous run in --out")
    p.add_argument("--resume", action="store_true", help="go on from --out's checkpoint (run.checkpoint_every)")
    p.set_defaults(func=_cmd_run)
    p = sub.add_parser("evaluate", help="score a run's saved model on its task's test data")
    p.add_argument("--model", required=True, help="the run's --out folder (model.safetensors, manifest.json)")
    p.add_argument("--config", required=True, help="the run's TOML config (names the task)")
    p.set_defaults(func=_cmd_evaluate)
    p = sub.add_parser("predict", help="write a run's saved model's predictions for a CSV file")
    p.add_argument("--model", required=True, help="the run's --out folder (model.safetensors, manifest.json)")
    p.add_argument("--config", required=True, help="the run's TOML config (names the task)")
    p.add_argument("--csv", required=True, help="the rows to predict (the training feature columns)")
    p.add_argument("--output", required=True, help="the CSV to write: row, prediction (, score)")
    p.add_argument("--keep", help="comma-separated columns of --csv copied beside each prediction (e.g. an id)")
    p.set_defaults(func=_cmd_predict)
    p = sub.add_parser("new", help="start a project: a task module, sample data, configs, README and a test")
    p.add_argument("name", help="the project's folder; its Python name has dashes as underscores")
    p.add_argument("--template", default="tabular", help="tabular, image or text (default: tabular)")
    p.add_argument("--dir", default=".", help="the folder to create the project in (default: here)")
    p.set_defaults(func=_cmd_new)
    p = sub.add_parser("sweep", help="learning-rate sweep of a config")
    p.add_argument("config")
    p.add_argument("--lrs", help="comma-separated rates (default: the config's [sweep] section)")
    p.add_argument("--rounds", type=int, help="override run.rounds")
    p.add_argument("--out", help="output folder")
    p.set_defaults(func=_cmd_sweep)
    p = sub.add_parser("reproduce", help="rerun cells of McMahan et al. 2017's tables")
    p.add_argument("paper", choices=["mcmahan"])
    p.add_argument("--quick", action="store_true", help="a subset that finishes in about 20 minutes on 2 cores")
    p.add_argument(
        "--table1", action="store_true", help="every 2NN cell of Table 1 (C = 0 to 1, IID and not, B = 10 and inf)"
    )
    p.add_argument("--cells", help="comma-separated cell ids (see --list)")
    p.add_argument("--list", action="store_true", help="list the cells and exit")
    p.add_argument(
        "--render", help="comma-separated results.json files of earlier runs: write one report, train nothing"
    )
    p.add_argument("--max-rounds-factor", type=float, default=2.0, help="round cap as a multiple of the paper's count")
    p.add_argument("--max-rounds", type=int, help="round cap per run; replaces --max-rounds-factor")
    p.add_argument("--out", default="runs/reproduce_mcmahan", help="output folder")
    p.set_defaults(func=_cmd_reproduce)
    p = sub.add_parser("lab", help="attack x defence matrix (poisoning, backdoors, robust aggregation)")
    p.add_argument("config", nargs="?", default="configs/lab_mnist.toml")
    p.add_argument("--rounds", type=int, help="override run.rounds")
    p.add_argument("--attacks", help="comma-separated subset of lab.attacks")
    p.add_argument("--defences", help="comma-separated defences (default: lab.defences; any registered aggregator)")
    p.add_argument("--check", action="store_true", help="validate the config (cohort, attacks, trigger) and exit")
    p.add_argument(
        "--seeds", help="comma-separated seeds, one run of each cell per seed (default: lab.seeds or run.seed)"
    )
    p.add_argument("--out", default="runs/lab", help="folder for lab.json, results.md and heatmap.png")
    p.add_argument("--update-doc", action="store_true", help="also rewrite the results block of --doc and --img")
    p.add_argument(
        "--doc", default="docs/security.md", help="with --update-doc: Markdown file whose results block is rewritten"
    )
    p.add_argument("--img", default="docs/img/security_heatmap.png", help="with --update-doc: heatmap PNG")
    p.set_defaults(func=_cmd_lab)
    p = sub.add_parser("partition", help="print a config's partition statistics")
    p.add_argument("config")
    p.set_defaults(func=_cmd_partition)
    _add_dashboard_command(sub)
