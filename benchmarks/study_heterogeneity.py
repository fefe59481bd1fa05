"""Heterogeneity study: FedProx vs FedAvg with stragglers, five algorithms on MNIST Dirichlet label skew,
FedNova vs FedAvg with heterogeneous local epochs. Writes runs/study/<part>.json and docs/img/<part>.png.

Usage: python benchmarks/study_heterogeneity.py [prox|mnist|nova ...] [--rounds N]
Sized to a few minutes per part on a shared 2-core CPU machine.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np

from hamrah.algorithms import build
from hamrah.data import federate, load_dataset
from hamrah.experiments.plots import plot_curves
from hamrah.models import build_model
from hamrah.simulation import SimulationConfig, Simulator, seeded
from hamrah.simulation.heterogeneity import Heterogeneity

ROOT = Path(__file__).resolve().parents[1]


def run(fed, model_name, algo, rounds, eval_every, het=None, seed=0):
    """Return (rounds, test accuracies, train losses, wall seconds) of one simulated run."""
    sim = Simulator(seeded(lambda: build_model(model_name, fed.dataset), seed), fed, algo,
                    SimulationConfig(rounds=rounds, eval_every=eval_every, seed=seed, heterogeneity=het))
    t = time.perf_counter()
    res = sim.run()
    h = res.history
    return {"rounds": [r.round for r in h], "acc": [r.test_accuracy for r in h],
            "train_loss": [r.train_loss for r in h], "test_loss": [r.test_loss for r in h],
            "wall_s": round(time.perf_counter() - t, 1)}


def part_prox(rounds: int) -> dict:
    """Li et al. 2020 Fig. 1: synthetic(1,1), 30 clients, 10 per round, E=20, B=10, lr=0.01, 90% stragglers."""
    fed = federate(load_dataset("synthetic_1_1"), "natural", None, 0)
    het = Heterogeneity(straggler_fraction=0.9)
    base = dict(client_fraction=10 / 30, local_epochs=20, batch_size=10, lr=0.01)
    out = {}
    for label, name, extra in [("FedAvg (drops stragglers)", "fedavg", {}), ("FedProx mu=0", "fedprox", {"mu": 0.0}),
                               ("FedProx mu=1", "fedprox", {"mu": 1.0})]:
        out[label] = run(fed, "logreg", build(name, **base, **extra), rounds, 5, het)
        print(label, out[label]["acc"][-1], out[label]["wall_s"], flush=True)
    return out


def part_mnist(rounds: int, alpha: float) -> dict:
    fed = federate(load_dataset("mnist"), "dirichlet", 100, 0, alpha=alpha)
    base = dict(client_fraction=0.1, local_epochs=1, batch_size=10, lr=0.05)
    algos = [("FedAvg", "fedavg", {}), ("FedProx mu=0.01", "fedprox", {"mu": 0.01}),
             ("SCAFFOLD", "scaffold", {"num_clients": 100}), ("FedNova", "fednova", {}),
             ("FedAdam", "fedadam", {"server_lr": 0.003, "tau": 1e-3})]
    out = {}
    for label, name, extra in algos:
        out[label] = run(fed, "2nn", build(name, **base, **extra), rounds, 5)
        print(alpha, label, out[label]["acc"][-1], out[label]["wall_s"], flush=True)
    return out


def part_nova(rounds: int) -> dict:
    """Wang et al. 2020's setting on MNIST: Dirichlet(0.1), local epochs uniform in 2..5."""
    fed = federate(load_dataset("mnist"), "dirichlet", 100, 0, alpha=0.1)
    het = Heterogeneity(epochs=(2, 5))
    base = dict(client_fraction=0.1, local_epochs=2, batch_size=50, lr=0.02)
    out = {}
    for label, name in [("FedAvg", "fedavg"), ("FedNova", "fednova")]:
        out[label] = run(fed, "2nn", build(name, **base), rounds, 5, het)
        print(label, out[label]["acc"][-1], out[label]["wall_s"], flush=True)
    return out


def save(name: str, res: dict, title: str, key: str = "acc") -> None:
    (ROOT / "runs/study").mkdir(parents=True, exist_ok=True)
    (ROOT / "docs/img").mkdir(parents=True, exist_ok=True)
    (ROOT / f"runs/study/{name}.json").write_text(json.dumps(res, indent=1))
    plot_curves({k: (v["rounds"], v[key]) for k, v in res.items()}, ROOT / f"docs/img/{name}.png", title=title)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("parts", nargs="*", default=["prox", "mnist", "nova"])
    ap.add_argument("--rounds", type=int, default=None)
    a = ap.parse_args()
    if "prox" in a.parts:
        res = part_prox(a.rounds or 100)
        save("prox_synthetic", res, "synthetic(1,1), 90% stragglers: test accuracy")
        save("prox_synthetic_loss", res, "synthetic(1,1), 90% stragglers: training loss", key="train_loss")
    if "mnist" in a.parts:
        for alpha in (0.1, 0.5):
            save(f"mnist_dir{alpha}", part_mnist(a.rounds or 100, alpha), f"MNIST 2NN, Dirichlet({alpha})")
    if "nova" in a.parts:
        save("nova_mnist", part_nova(a.rounds or 100), "MNIST 2NN Dir(0.1), E ~ U{2..5}")


if __name__ == "__main__":
    main()
