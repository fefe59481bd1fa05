"""The batched trainer beyond FedAvg: FedProx, FedNova (its proximal pull), Ditto and FedPer (each
client from its own start; Ditto's personal pass with its pull), against the same runs one client at
a time (``run.batched = false``: two worker processes), in the same sitting.

McMahan et al.'s 2NN on MNIST, 100 clients (two digits each), C = 0.1, E = 1, B = 10, lr 0.05,
10 rounds, the whole simulation timed (``Simulator.run``, one evaluation at the end); the largest
difference between the two final models shows they are the same run up to float rounding.

    .venv/bin/python benchmarks/bench_batched_algorithms.py     # about a minute on 2 cores
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from hamrah.core.params import max_abs_diff
from hamrah.experiments.config import from_dict
from hamrah.experiments.runner import prepare
from hamrah.simulation import SimulationConfig, Simulator, seeded

OUT = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "batched_algorithms.json"
ROUNDS = 10
RUNS = {  # label: extra config sections
    "FedAvg": {},
    "FedProx (mu 0.01)": {"algorithm": {"name": "fedprox", "mu": 0.01}},
    "FedNova (mu 0.01)": {"algorithm": {"name": "fednova", "mu": 0.01}},
    "Ditto (lam 0.1)": {"personalization": {"method": "ditto", "lam": 0.1}},
    "FedPer (fc3)": {"personalization": {"method": "fedper", "layers": ["fc3"]}},
}


def timed(extra: dict, batched: bool) -> tuple[float, dict]:
    algorithm = {"name": "fedavg", "client_fraction": 0.1, "local_epochs": 1, "batch_size": 10, "lr": 0.05}
    raw = {
        "data": {"dataset": "mnist", "partition": "shards", "num_clients": 100},
        "model": {"name": "2nn"},
        "algorithm": {**algorithm, **extra.get("algorithm", {})},
        "run": {"rounds": ROUNDS, "eval_every": ROUNDS, "seed": 0},
        **{k: v for k, v in extra.items() if k != "algorithm"},
    }
    prep = prepare(from_dict(raw))
    # one at a time: in two worker processes, as measured in docs/benchmarks.md
    cfg = SimulationConfig(rounds=ROUNDS, eval_every=ROUNDS, seed=0, batched=batched, workers=None if batched else 2)
    sim = Simulator(seeded(prep.model_factory, 0), prep.data, prep.algorithm, cfg, task=prep.task)
    start = time.perf_counter()
    result = sim.run()
    return time.perf_counter() - start, result.params


def main() -> None:
    rows = {}
    for label, extra in RUNS.items():
        t_batched, fast = timed(extra, True)
        t_one, slow = timed(extra, False)
        rows[label] = {
            "batched_s_per_round": round(t_batched / ROUNDS, 4),
            "one_at_a_time_s_per_round": round(t_one / ROUNDS, 4),
            "speed_up": round(t_one / t_batched, 2),
            "max_model_difference": max_abs_diff(fast, slow),
        }
        print(label, rows[label], flush=True)
    OUT.write_text(json.dumps({"command": "benchmarks/bench_batched_algorithms.py", "runs": rows}, indent=2) + "\n")
    print("| algorithm | batched, s / round | one at a time, s / round | speed-up | largest model difference |")
    print("|---|---:|---:|---:|---:|")
    for label, r in rows.items():
        print(
            f"| {label} | {r['batched_s_per_round']:.3f} | {r['one_at_a_time_s_per_round']:.3f} | "
            f"{r['speed_up']:.1f}x | {r['max_model_difference']:.1e} |"
        )


if __name__ == "__main__":
    main()
