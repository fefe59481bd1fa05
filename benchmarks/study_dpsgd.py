"""Example-level DP-SGD in federated training (privacy.mode = "dpsgd"): MNIST accuracy against the
largest epsilon any client spent, beside the same run without DP.

McMahan et al. 2017's 2NN, 100 IID clients (600 examples each), FedAvg, C = 0.1, E = 1, B = 50,
lr 0.1, per-example clip S = 1, Poisson batches (q = 50/600), RDP accounting at delta = 1e-5 per
client (its examples' guarantee composes every training it ran). A sweep of noise multipliers z,
then the budget: privacy.target_epsilon caps every client, who sits rounds out once one more training
would pass it. Results go to ``benchmarks/results/dpsgd_mnist.json`` after every run.

    .venv/bin/python benchmarks/study_dpsgd.py             # about 10 minutes on 2 shared cores
    .venv/bin/python benchmarks/study_dpsgd.py --lr 0.5    # the same at a larger learning rate
    .venv/bin/python benchmarks/study_dpsgd.py --report    # the tables of the last runs
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from hamrah.experiments.config import from_dict
from hamrah.experiments.runner import prepare

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "dpsgd_mnist.json"  # {lr: {run: result}}
ROUNDS, DELTA = 50, 1e-5
RUNS = [  # (label, privacy section or None)
    ("no DP", None),
    ("clipping only (z = 0)", {"noise_multiplier": 0.0}),
    ("z = 0.7", {"noise_multiplier": 0.7}),
    ("z = 1.0", {"noise_multiplier": 1.0}),
    ("z = 2.0", {"noise_multiplier": 2.0}),
    ("z = 1.0, target epsilon 4", {"noise_multiplier": 1.0, "target_epsilon": 4.0}),
]


def one_run(privacy: dict | None, lr: float) -> dict:
    """Run one configuration; return its accuracy, epsilon and the clients that sat out."""
    section = {} if privacy is None else {"privacy": {"mode": "dpsgd", "clip": 1.0, "delta": DELTA, **privacy}}
    cfg = from_dict(
        {
            "data": {"dataset": "mnist", "partition": "iid", "num_clients": 100},
            "model": {"name": "2nn"},
            "algorithm": {"name": "fedavg", "client_fraction": 0.1, "local_epochs": 1, "batch_size": 50, "lr": lr},
            "run": {"rounds": ROUNDS, "seed": 0, "eval_every": 10},
            **section,
        }
    )
    sim = prepare(cfg).simulator()
    sat_out = []
    train_round = sim.train_round

    def counted(r):
        results = train_round(r)
        sat_out.append(sum(x.error is not None and "privacy budget" in x.error for x in results))
        return results

    sim.train_round = counted
    t0 = time.perf_counter()
    res = sim.run(lambda rec: print(f"  round {rec.round}: accuracy {rec.test_accuracy:.4f}", flush=True))
    last = res.history[-1]
    return {  # the last scored round: the run may end early when no client can afford another training
        "accuracy": last.test_accuracy,
        "epsilon": last.epsilon,
        "rounds": last.round,
        "sat_out": sum(sat_out),
        "stopped": res.stopped,
        "seconds": round(time.perf_counter() - t0, 1),
    }


def report(results: dict) -> None:
    print("| lr | run | rounds | test accuracy | largest client epsilon (delta 1e-5) | client-rounds sat out | s |")
    print("|---|---|---|---|---|---|---|")
    for lr, runs in results.items():
        for label, r in runs.items():
            eps = "-" if r["epsilon"] is None else f"{r['epsilon']:.2f}"
            print(f"| {lr} | {label} | {r['rounds']} | {r['accuracy']:.4f} | {eps} | {r['sat_out']} | {r['seconds']} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--report", action="store_true", help="print the tables of the last runs")
    ap.add_argument("--lr", type=float, default=0.1, help="the clients' learning rate (default 0.1)")
    args = ap.parse_args()
    results: dict = json.loads(OUT.read_text()) if OUT.exists() else {}
    if args.report:
        report(results)
        return
    runs = results[str(args.lr)] = {}
    for label, privacy in RUNS:
        print(label, flush=True)
        runs[label] = one_run(privacy, args.lr)
        OUT.write_text(json.dumps(results, indent=1) + "\n")  # after every run: a partial study is kept
    report(results)


if __name__ == "__main__":
    main()
