"""DP-FTRL (Kairouz et al. 2021) beside DP-FedAvg (McMahan et al. 2018) in simulation: epsilon and accuracy.

Two tasks, short runs that fit a shared 2-core machine:

- MNIST, logistic regression, 100 IID clients, 10 a round, E = 1, B = 10, lr 0.1, clip 0.5, 40 rounds;
- Shakespeare (LEAF's natural partition, 100 speaking roles), char LSTM, 10 clients a round, E = 1,
  B = 10, lr 1.47, clip 1.0, 10 rounds (one tree of k = 10).

Per task: no DP; DP-FedAvg with Poisson sampling (q = C) at z; DP-FTRL with trees of k = K / m rounds
(each client exactly once per tree, no sampling assumed) at the same z; and DP-FTRL at the z that spends
DP-FedAvg's epsilon (calibrated with dp-accounting). Delta = 1e-5, RDP, seed 0. Results go to
``benchmarks/results/ftrl_<task>.json`` (written after every run).

    .venv/bin/python benchmarks/study_ftrl.py                 # both tasks
    .venv/bin/python benchmarks/study_ftrl.py --task mnist    # one task
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import platform
import time
from pathlib import Path

import torch

from hamrah.experiments.config import from_dict, pipeline_spec
from hamrah.experiments.runner import prepare
from hamrah.pipeline import resolve_pipeline
from hamrah.privacy import RoundSpec, epsilon_of

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "ftrl_{task}.json"  # one file per task
DELTA = 1e-5
TASKS = {
    "mnist": {
        "data": {"dataset": "mnist", "partition": "iid", "num_clients": 100},
        "model": {"name": "logreg"},
        "algorithm": {"name": "fedavg", "client_fraction": 0.1, "local_epochs": 1, "batch_size": 10, "lr": 0.1},
        "rounds": 40,
        "clip": 0.5,
        "z": 1.0,
    },
    "shakespeare": {
        "data": {"dataset": "shakespeare", "partition": "natural", "num_clients": 100},
        "model": {"name": "char_lstm"},
        "algorithm": {"name": "fedavg", "client_fraction": 0.1, "local_epochs": 1, "batch_size": 10, "lr": 1.47},
        "rounds": 10,
        "clip": 1.0,
        "z": 1.0,
    },
}


def _config(task: dict, privacy: dict | None, seed: int = 0):
    extra = {} if privacy is None else {"privacy": privacy}
    return from_dict(
        {
            "data": task["data"],
            "model": task["model"],
            "algorithm": task["algorithm"],
            "run": {"rounds": task["rounds"], "seed": seed, "eval_every": task["rounds"]},
            **extra,
        }
    )


def cells(task: dict, population: int, cohort: int) -> list[tuple[str, dict | None]]:
    """Return (label, privacy section) of the four runs of a task."""
    clip, z, rounds = task["clip"], task["z"], task["rounds"]
    k = min(rounds, population // cohort)
    fedavg = {"mode": "central", "clip": clip, "noise_multiplier": z, "delta": DELTA, "sampling": "poisson"}
    eps = epsilon_of([(RoundSpec.poisson(z, cohort / population), rounds)], DELTA)
    matched = resolve_pipeline(
        None,
        {"mode": "ftrl", "clip": clip, "target_epsilon": eps, "delta": DELTA, "tree_rounds": k},
        population,
        cohort,
        rounds,
    ).noise_multiplier
    return [
        ("no DP", None),
        ("DP-FedAvg (Poisson)", fedavg),
        ("DP-FTRL, same z", {"mode": "ftrl", "clip": clip, "noise_multiplier": z, "delta": DELTA, "tree_rounds": k}),
        (
            "DP-FTRL, same epsilon",
            {"mode": "ftrl", "clip": clip, "noise_multiplier": round(matched, 4), "delta": DELTA, "tree_rounds": k},
        ),
    ]


def run_task(name: str, out: dict) -> None:
    task = TASKS[name]
    base = prepare(_config(task, None))  # the data is loaded and split once
    population = base.data.num_clients
    cohort = base.algorithm.cohort_size(population)
    for label, privacy in cells(task, population, cohort):
        start, cpu = time.perf_counter(), time.process_time()
        cfg = _config(task, privacy)
        prepared = dataclasses.replace(base, config=cfg, pipeline=pipeline_spec(cfg, population))
        result = prepared.simulator().run()
        last = result.history[-1]
        row = {
            "task": name,
            "run": label,
            "population": population,
            "cohort": cohort,
            "rounds": task["rounds"],
            "privacy": privacy,
            "accuracy": last.test_accuracy,
            "epsilon": last.epsilon,
            "wall_s": round(time.perf_counter() - start, 1),
            "cpu_s": round(time.process_time() - cpu, 1),
        }
        out["runs"].append(row)
        print(json.dumps(row), flush=True)
        Path(str(OUT).format(task=name)).write_text(json.dumps(out, indent=1) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=sorted(TASKS), action="append", help="run only this task (repeatable)")
    args = parser.parse_args()
    logging.getLogger("absl").setLevel(logging.ERROR)
    out = {
        "setup": {
            "delta": DELTA,
            "accountant": "rdp",
            "seed": 0,
            "tasks": TASKS,
            "torch": torch.__version__,
            "python": platform.python_version(),
            "machine": "shared 2-core CPU machine",
            "command": ".venv/bin/python benchmarks/study_ftrl.py",
        },
        "runs": [],
    }
    for name in args.task or sorted(TASKS):
        run_task(name, {**out, "runs": []})


if __name__ == "__main__":
    main()
