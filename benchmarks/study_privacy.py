"""The DP study of issue 5, section 3: MNIST accuracy against epsilon, and what clients per round change.

Central user-level DP-FedAvg (McMahan et al. 2018) through the simulator's update pipeline: FedAvg,
100 IID clients, E = 1, B = 10, lr 0.1, Poisson sampling with q = C, fixed rounds, RDP accounting at
delta = 1e-5. Two sweeps per model:

1. noise multipliers z at C = 0.1 (about 10 clients a round): accuracy against the epsilon spent;
2. C = 0.5 (about 50 a round) at z' = 5 z: the same noise std z S / m on the average update, so the
   same accuracy is bought with far less privacy loss.

Baselines per C: no DP, and clipping only (z = 0). Results go to ``benchmarks/results/privacy.json``
(written after every run, so a partial study is kept) and the plots to ``docs/img/privacy_*.png``.

    .venv/bin/python benchmarks/study_privacy.py            # about 10-15 minutes on 2 shared cores
    .venv/bin/python benchmarks/study_privacy.py --plot     # redraw the plots from the JSON
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
import time
from pathlib import Path

import torch

from hamrah.experiments.config import from_dict
from hamrah.experiments.runner import prepare

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "privacy.json"
IMG = ROOT / "docs" / "img"
MODELS = {"2nn": 1.0, "logreg": 0.5}  # model -> clip norm S
NOISES = (0.3, 0.5, 1.0, 2.0)
ROUNDS, SEEDS, DELTA = 40, (0,), 1e-5


def one_run(model: str, c: float, z: float | None, seed: int) -> dict:
    """Run one configuration; return its final accuracy and epsilon."""
    privacy = (
        {}
        if z is None
        else {
            "privacy": {
                "mode": "central",
                "clip": MODELS[model],
                "noise_multiplier": z,
                "delta": DELTA,
                "sampling": "poisson",
                "accountant": "rdp",
            }
        }
    )
    cfg = from_dict(
        {
            "data": {"dataset": "mnist", "partition": "iid", "num_clients": 100},
            "model": {"name": model},
            "algorithm": {"name": "fedavg", "client_fraction": c, "local_epochs": 1, "batch_size": 10, "lr": 0.1},
            "run": {"rounds": ROUNDS, "seed": seed, "eval_every": ROUNDS},
            **privacy,
        }
    )
    start = time.perf_counter()
    result = prepare(cfg).simulator().run()
    last = result.history[-1]
    return {
        "model": model,
        "client_fraction": c,
        "noise_multiplier": z,
        "seed": seed,
        "clip": MODELS[model],
        "accuracy": last.test_accuracy,
        "epsilon": last.epsilon if last.epsilon is not None and last.epsilon < float("inf") else None,
        "noise_std_on_mean": None if z is None else z * MODELS[model] / (c * 100),
        "wall_s": round(time.perf_counter() - start, 2),
    }


def grid() -> list[tuple[str, float, float | None]]:
    cells = []
    for model in MODELS:
        for c, scale in ((0.1, 1.0), (0.5, 5.0)):
            cells += [(model, c, None), (model, c, 0.0)] + [(model, c, z * scale) for z in NOISES]
    return cells


def run_study() -> dict:
    out = {
        "setup": {
            "rounds": ROUNDS,
            "seeds": list(SEEDS),
            "delta": DELTA,
            "num_clients": 100,
            "partition": "iid",
            "local_epochs": 1,
            "batch_size": 10,
            "lr": 0.1,
            "sampling": "poisson",
            "accountant": "rdp",
            "clip": MODELS,
            "machine": "shared 2-core CPU machine",
            "torch": torch.__version__,
            "python": platform.python_version(),
            "command": ".venv/bin/python benchmarks/study_privacy.py",
        },
        "runs": [],
    }
    for model, c, z in grid():
        for seed in SEEDS:
            row = one_run(model, c, z, seed)
            out["runs"].append(row)
            print(json.dumps(row), flush=True)
            OUT.write_text(json.dumps(out, indent=1) + "\n")
    out["table"] = table(out["runs"])
    OUT.write_text(json.dumps(out, indent=1) + "\n")
    return out


def table(runs: list[dict]) -> list[dict]:
    """Return one row per (model, C, z): mean accuracy over seeds and the epsilon."""
    cells: dict[tuple, list[dict]] = {}
    for r in runs:
        cells.setdefault((r["model"], r["client_fraction"], r["noise_multiplier"]), []).append(r)
    rows = []
    for (model, c, z), rs in cells.items():
        accs = [r["accuracy"] for r in rs]
        rows.append(
            {
                "model": model,
                "client_fraction": c,
                "noise_multiplier": z,
                "epsilon": rs[0]["epsilon"],
                "noise_std_on_mean": rs[0]["noise_std_on_mean"],
                "accuracy_mean": statistics.fmean(accs),
                "accuracy_min": min(accs),
                "accuracy_max": max(accs),
                "seeds": len(rs),
            }
        )
    return rows


def plot(data: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = data.get("table") or table(data["runs"])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, x_key, xlabel in (
        (axes[0], "epsilon", "epsilon at delta = 1e-5 (RDP)"),
        (axes[1], "noise_std_on_mean", "noise std on the mean update, z S / m"),
    ):
        for model, style in (("2nn", "-"), ("logreg", "--")):
            for c, color in ((0.1, "tab:blue"), (0.5, "tab:orange")):
                pts = sorted(
                    (r[x_key], r["accuracy_mean"])
                    for r in rows
                    if r["model"] == model and r["client_fraction"] == c and r["noise_multiplier"]
                )
                if pts:
                    ax.plot(*zip(*pts), style, marker="o", color=color, label=f"{model}, ~{int(c * 100)} clients/round")
                base = [
                    r["accuracy_mean"]
                    for r in rows
                    if r["model"] == model and r["client_fraction"] == c and r["noise_multiplier"] is None
                ]
                if base and c == 0.1:
                    ax.axhline(base[0], linestyle=style, color="grey", linewidth=0.8)
        ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(f"test accuracy after {data['setup']['rounds']} rounds")
        ax.grid(alpha=0.3)
    axes[0].set_title("MNIST, DP-FedAvg: accuracy against epsilon")
    axes[1].set_title("same noise on the mean: same accuracy")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    IMG.mkdir(parents=True, exist_ok=True)
    fig.savefig(IMG / "privacy_accuracy_epsilon.png", dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plot", action="store_true", help="only redraw the plots from the JSON")
    args = parser.parse_args()
    logging.getLogger("absl").setLevel(logging.ERROR)
    data = json.loads(OUT.read_text()) if args.plot else run_study()
    plot(data)


if __name__ == "__main__":
    main()
