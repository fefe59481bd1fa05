"""Personalized FL on non-IID clients: each client's accuracy on its own held-out examples, with the
global model (FedAvg) and with the model it would use under fine-tuning, FedPer and Ditto.

McMahan et al. 2017's 2NN on MNIST, 100 clients of the pathological non-IID split (200 shards of 300
sorted examples, 2 per client: each client sees about two digits; ``--split shards``) or of a
Dirichlet(0.5) label split (``--split dirichlet``), C = 0.1, E = 1, B = 10, lr 0.05;
``personalization.holdout = 0.2`` keeps 20% of every client's examples out of training to score it.
Every run scores all 100 clients at the end: the mean over clients and the 10th percentile (how the
worst-served users fare), beside the global model's accuracy on the MNIST test set. Results go to
``benchmarks/results/personalization_mnist.json`` after every run.

    .venv/bin/python benchmarks/study_personalization.py                    # about 3 minutes on 2 cores
    .venv/bin/python benchmarks/study_personalization.py --split dirichlet
    .venv/bin/python benchmarks/study_personalization.py --attack gaussian  # 20% of clients send noise
    .venv/bin/python benchmarks/study_personalization.py --report           # the table of the last runs
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from hamrah.attacks import build_attack, choose_malicious
from hamrah.experiments.config import from_dict
from hamrah.experiments.runner import prepare, run_experiment
from hamrah.simulation import SimulationConfig, Simulator, seeded

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "personalization_mnist.json"
RUNS = [  # (label, [personalization] section)
    ("FedAvg, global model", {"method": "finetune"}),  # scores the global model and its fine-tuned copy
    ("FedPer (personal fc3)", {"method": "fedper", "layers": ["fc3"]}),
    ("Ditto, lam = 0.1", {"method": "ditto", "lam": 0.1}),
    ("Ditto, lam = 1.0", {"method": "ditto", "lam": 1.0}),
    ("local training only (Ditto, lam = 0)", {"method": "ditto", "lam": 0.0}),
]


SPLITS = {  # --split: the [data] section
    "shards": {"partition": "shards", "shards_per_client": 2},
    "dirichlet": {"partition": "dirichlet", "alpha": 0.5},
}


ATTACKED = [  # --attack: the runs whose honest clients are scored
    ("FedAvg, global model", {"method": "finetune"}),
    ("Ditto, lam = 0.1", {"method": "ditto", "lam": 0.1}),
    ("Ditto, lam = 1.0", {"method": "ditto", "lam": 1.0}),
    ("local training only (Ditto, lam = 0)", {"method": "ditto", "lam": 0.0}),
]
MALICIOUS = 0.2  # --attack: share of the population the attacker controls


def one_run(section: dict, rounds: int, split: str, attack: str | None = None) -> dict:
    """Run one configuration; return the clients' and the global model's final metrics."""
    cfg = from_dict(
        {
            "data": {"dataset": "mnist", "num_clients": 100, **SPLITS[split]},
            "model": {"name": "2nn"},
            "algorithm": {"name": "fedavg", "client_fraction": 0.1, "local_epochs": 1, "batch_size": 10, "lr": 0.05},
            "run": {"rounds": rounds, "eval_every": rounds, "seed": 0},
            "personalization": {**section, "holdout": 0.2},
        }
    )
    start = time.perf_counter()
    keys = ("local_accuracy", "local_accuracy_p10", "personal_accuracy", "personal_accuracy_p10")
    if attack is None:
        s = run_experiment(cfg, plot=False)
        test, final = s["final_accuracy"], {k: s.get(f"final_{k}") for k in keys}
    else:  # the same run with an attacker among the clients; the honest ones are scored
        prep = prepare(cfg)
        bad = build_attack(attack, choose_malicious(prep.data.num_clients, MALICIOUS, cfg.run.seed))
        sim = Simulator(
            seeded(prep.model_factory, cfg.run.seed),
            prep.data,
            prep.algorithm,
            SimulationConfig(rounds=rounds, eval_every=rounds, seed=cfg.run.seed),
            attack=bad,
            task=prep.task,
            finetune=section["method"] == "finetune",
        )
        last = sim.run().history[-1]
        test, final = last.test_accuracy, {k: last.extra.get(k) for k in keys}
    return {"rounds": rounds, "test_accuracy": test, **final, "wall_s": round(time.perf_counter() - start, 1)}


def report(results: dict) -> str:
    lines = [
        "| method | global model, test set | global model on each client's held-out examples: mean / p10 | "
        "the client's own model: mean / p10 |",
        "|---|---:|---:|---:|",
    ]
    for label, r in results.items():
        own = f"{r['personal_accuracy']:.4f} / {r['personal_accuracy_p10']:.4f}"
        if label.startswith("FedAvg"):
            own += " (fine-tuned once)"
        lines.append(
            f"| {label} | {r['test_accuracy']:.4f} | {r['local_accuracy']:.4f} / {r['local_accuracy_p10']:.4f} | "
            f"{own} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=50)
    ap.add_argument(
        "--split", choices=sorted(SPLITS), default="shards", help="two digits per client, or Dirichlet(0.5)"
    )
    ap.add_argument("--attack", help="an attack of hamrah.attacks (e.g. gaussian) on 20%% of the clients")
    ap.add_argument("--report", action="store_true", help="print the table of the last runs")
    args = ap.parse_args()
    saved = json.loads(OUT.read_text()) if OUT.exists() else {}
    key = args.split if args.attack is None else f"{args.split}+{args.attack}"
    if args.report:
        print(report(saved[key]["runs"]))
        return
    results: dict = {}
    for label, section in RUNS if args.attack is None else ATTACKED:
        results[label] = one_run(section, args.rounds, args.split, args.attack)
        print(label, results[label], flush=True)
        command = f"benchmarks/study_personalization.py --split {args.split} --rounds {args.rounds}"
        saved[key] = {"command": command + (f" --attack {args.attack}" if args.attack else ""), "runs": results}
        OUT.write_text(json.dumps(saved, indent=2) + "\n")
    print(report(results))


if __name__ == "__main__":
    main()
