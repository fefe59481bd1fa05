"""Learning-rate sweeps: run one config at several rates, report each rate's rounds-to-target."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hamrah.experiments.config import ExperimentConfig
from hamrah.experiments.plots import plot_curves
from hamrah.experiments.runner import build_algorithm, prepare, run_experiment
from hamrah.experiments.targets import paper_grid
from hamrah.simulation import RoundRecord


@dataclass(frozen=True)
class SweepPoint:
    lr: float
    rounds_to_target: float | None
    best_accuracy: float
    final_accuracy: float
    rounds_run: int
    wall_s: float
    curve: tuple[tuple[int, ...], tuple[float, ...]]
    pruned: bool = False  # stopped at the round the best rate so far had reached the target by


def sweep_rates(cfg: ExperimentConfig) -> list[float]:
    """Return the rates a config's ``[sweep]`` section asks for."""
    s = cfg.sweep
    return list(s.lrs) if s.lrs else paper_grid(s.lr_min, s.lr_max, s.per_decade)


def best_point(points: list[SweepPoint]) -> SweepPoint:
    """Fewest rounds to target among rates that reach it; else the highest accuracy."""
    reached = [p for p in points if p.rounds_to_target is not None]
    if reached:
        return min(reached, key=lambda p: (p.rounds_to_target, -p.best_accuracy))
    return max(points, key=lambda p: p.best_accuracy)


def next_rate(points: list[SweepPoint]) -> float | None:
    """The rate one grid step beyond the edge where the best rate lies, or None: the best is inside
    the rates tried, reached no target, or there is no step to take. On a 10^(1/n) grid the rate is
    the grid's own (0.0464 below 0.1, not 0.1 * 0.1 / 0.215), to 3 significant digits."""
    tried = sorted({p.lr for p in points})
    best = best_point(points)
    if len(tried) < 2 or best.rounds_to_target is None or best.lr not in (tried[0], tried[-1]):
        return None
    edge, inner = (tried[0], tried[1]) if best.lr == tried[0] else (tried[-1], tried[-2])
    exponent = 2 * math.log10(edge) - math.log10(inner)
    per_decade = 1 / abs(math.log10(edge / inner))
    if abs(per_decade - round(per_decade)) < 0.05:
        exponent = round(exponent * round(per_decade)) / round(per_decade)
    return float(f"{10**exponent:.3g}")


def _round_cap(cfg: ExperimentConfig, points: list[SweepPoint]) -> int:
    """The next rate's rounds: the config's, or with ``prune`` the first evaluation at or after the
    best rounds to target so far."""
    reached = [p.rounds_to_target for p in points if p.rounds_to_target is not None]
    if not (cfg.sweep.prune and reached):
        return cfg.run.rounds
    every = max(cfg.run.eval_every, 1)
    return min(cfg.run.rounds, math.ceil(min(reached) / every) * every)


def run_sweep(
    cfg: ExperimentConfig,
    rates: list[float],
    out_dir: Path | None = None,
    on_start: Callable[[float], None] | None = None,
    on_round: Callable[[RoundRecord], None] | None = None,
) -> list[SweepPoint]:
    """Run ``cfg`` once per learning rate (data loaded once); write ``sweep.json`` and ``sweep.png``.

    With ``[sweep] widen = N`` a best rate at an edge of the rates tried (it reached the target)
    moves that edge one grid step out, up to N times: the best rate is then known to be a true optimum
    of the grid, or the report shows it is not. With ``[sweep] prune = true`` a rate stops at the
    evaluation where the best rate so far had reached the target: past it, it could not be the best
    (the best rate is the same; slower rates' own rounds to target are then unknown)."""
    base = prepare(cfg)
    points: list[SweepPoint] = []
    pending, widen = list(rates), cfg.sweep.widen
    while pending:
        lr = pending.pop(0)
        if on_start is not None:
            on_start(lr)
        run_cfg = cfg.replace("algorithm", lr=lr).replace("run", rounds=_round_cap(cfg, points))
        prep = dataclasses.replace(base, config=run_cfg, algorithm=build_algorithm(run_cfg, base.data.num_clients))
        sub = out_dir / f"lr_{lr:g}" if out_dir is not None else None
        hist: list[RoundRecord] = []

        def record(rec: RoundRecord, hist: list[RoundRecord] = hist) -> None:
            hist.append(rec)
            if on_round is not None:
                on_round(rec)

        s = run_experiment(run_cfg, sub, on_round=record, prepared=prep)
        curve = (tuple(h.round for h in hist), tuple(h.test_accuracy for h in hist))
        points.append(
            SweepPoint(
                lr,
                s["rounds_to_target"],
                s["best_accuracy"],
                s["final_accuracy"],
                s["rounds_run"],
                s["wall_s"],
                curve,
                pruned=run_cfg.run.rounds < cfg.run.rounds and s["rounds_to_target"] is None,
            )
        )
        if not pending and widen > 0 and (beyond := next_rate(points)) is not None:
            pending, widen = [beyond], widen - 1
    if out_dir is not None:
        best = best_point(points)
        payload = {
            "config": cfg.to_dict(),
            "best_lr": best.lr,
            "points": [{k: v for k, v in p.__dict__.items() if k != "curve"} for p in points],
        }
        (out_dir / "sweep.json").write_text(json.dumps(payload, indent=2) + "\n")
        plot_curves(
            {f"lr={p.lr:g}": p.curve for p in points},
            out_dir / "sweep.png",
            title=f"learning-rate sweep: {cfg.algorithm.name} / {cfg.model.name}",
            target=cfg.run.target_accuracy,
        )
    return points
