"""Heterogeneity study: FedProx vs FedAvg with stragglers, five algorithms on MNIST Dirichlet label skew,
FedNova vs FedAvg with heterogeneous local epochs, up to five algorithms and several Dirichlet alphas on the
bundled CIFAR-10 subset (a slightly
lossy JPEG copy). Writes runs/study/<name>.json, docs/img/<name>.png and
benchmarks/results/heterogeneity_<part>.json (every curve of the part plus a summary: accuracy at the last
common round and rounds to --target).

Usage: python benchmarks/study_heterogeneity.py [prox|mnist|nova|cifar ...] [--rounds N] [--eval-every K]
       [--target A] [--alphas 0.1 0.5] [--algos fedavg fedprox scaffold fednova fedadam]
Sized to a few minutes per part on a shared 2-core CPU machine.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from hamrah.algorithms import build
from hamrah.core.errors import ConfigError
from hamrah.core.seeds import partition_rng
from hamrah.data import FederatedDataset, federate, load_dataset, partition
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


def part_mnist(rounds: int, alpha: float, eval_every: int) -> dict:
    """Five algorithms on MNIST 2NN with Dirichlet(alpha) label skew (Hsu et al. 2019), 100 clients, 10 per round."""
    fed = federate(load_dataset("mnist"), "dirichlet", 100, 0, alpha=alpha)
    base = dict(client_fraction=0.1, local_epochs=1, batch_size=10, lr=0.05)
    algos = [("FedAvg", "fedavg", {}), ("FedProx mu=0.01", "fedprox", {"mu": 0.01}),
             ("SCAFFOLD", "scaffold", {"num_clients": 100}), ("FedNova", "fednova", {}),
             ("FedAdam", "fedadam", {"server_lr": 0.003, "tau": 1e-3})]
    out = {}
    for label, name, extra in algos:
        out[label] = run(fed, "2nn", build(name, **base, **extra), rounds, eval_every)
        print(alpha, label, out[label]["acc"][-1], out[label]["wall_s"], flush=True)
    return out


def part_nova(rounds: int, eval_every: int) -> dict:
    """Wang et al. 2020's setting on MNIST: Dirichlet(0.1), local epochs uniform in 2..5."""
    fed = federate(load_dataset("mnist"), "dirichlet", 100, 0, alpha=0.1)
    het = Heterogeneity(epochs=(2, 5))
    base = dict(client_fraction=0.1, local_epochs=2, batch_size=50, lr=0.02)
    out = {}
    for label, name in [("FedAvg", "fedavg"), ("FedNova", "fednova")]:
        out[label] = run(fed, "2nn", build(name, **base), rounds, eval_every, het)
        print(label, out[label]["acc"][-1], out[label]["wall_s"], flush=True)
    return out


CIFAR_ALGOS = {"fedavg": ("FedAvg", {}), "fedprox": ("FedProx mu=0.01", {"mu": 0.01}),
               "scaffold": ("SCAFFOLD", {"num_clients": 50}), "fednova": ("FedNova", {}),
               "fedadam": ("FedAdam", {"server_lr": 0.003, "tau": 1e-3})}


def cifar_federated(alpha: float, num_clients: int = 50, seed: int = 0) -> FederatedDataset:
    """Split the CIFAR-10 subset by Dirichlet(alpha); if no draw gives every client 10 examples, ask for 5.

    federate()'s 10-example floor is not met by Dir(0.1) over 50 clients and 5,000 images in 100 draws.
    """
    ds = load_dataset("cifar10")
    try:
        return federate(ds, "dirichlet", num_clients, seed, alpha=alpha)
    except ConfigError:
        parts = partition.dirichlet(ds.train.y.numpy(), num_clients, alpha, partition_rng(seed), min_examples=5)
        return FederatedDataset(ds, parts, "dirichlet")


def part_cifar(rounds: int, eval_every: int, alpha: float, algos: list[str], on_done) -> dict:
    """CIFAR-10 subset (slightly lossy JPEG copy), CNN, Dirichlet(alpha), 50 clients, 10 per round.

    Calls ``on_done(label, result)`` after each algorithm so finished runs are kept if a later one is stopped.
    """
    fed = cifar_federated(alpha)
    base = dict(client_fraction=0.2, local_epochs=2, batch_size=20, lr=0.05)
    out = {}
    for name in algos:
        label, extra = CIFAR_ALGOS[name]
        out[label] = run(fed, "cnn", build(name, **base, **extra), rounds, eval_every)
        print(alpha, label, out[label]["acc"][-1], out[label]["wall_s"], flush=True)
        on_done(label, out[label])
    return out


def merge_cifar(run_name: str, label: str, res: dict, target: float, args: list[str]) -> None:
    """Add one run to benchmarks/results/heterogeneity_cifar.json, keeping the others, and redraw its plot."""
    path = ROOT / "benchmarks/results/heterogeneity_cifar.json"
    (ROOT / "runs").mkdir(exist_ok=True)
    with open(ROOT / "runs/heterogeneity_cifar.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        data = json.loads(path.read_text()) if path.exists() else {"runs": {}}
        data["machine"], data["seed"] = "shared 2-core CPU, other jobs running", 0
        data.setdefault("commands", {})[f"{run_name}/{label}"] = (
            "python benchmarks/study_heterogeneity.py " + " ".join(args))
        curves = data["runs"].setdefault(run_name, {"curves": {}})["curves"]
        curves[label] = res
        data["runs"][run_name]["summary"] = summary(curves, target)
        path.write_text(json.dumps(data, indent=1))
    alpha = run_name.removeprefix("cifar10_dir")
    save(f"het_cifar10_dir{alpha}", curves, f"CIFAR-10 subset (lossy JPEG) CNN, Dirichlet({alpha})")


def rounds_to(res: dict, target: float) -> int | None:
    """Return the first evaluated round whose test accuracy reaches ``target``, else None."""
    return next((r for r, a in zip(res["rounds"], res["acc"]) if a >= target), None)


def summary(res: dict, target: float) -> dict:
    """Return, per algorithm, accuracy at the last round all runs evaluated, best accuracy and rounds to target."""
    last = min(v["rounds"][-1] for v in res.values())
    return {k: {"round": last, "acc": v["acc"][v["rounds"].index(last)], "best": max(v["acc"]),
                "target": target, "rounds_to_target": rounds_to(v, target), "wall_s": v["wall_s"]}
            for k, v in res.items()}


def write_result(part: str, curves: dict, target: float, args: list[str]) -> None:
    """Write benchmarks/results/heterogeneity_<part>.json: the command, curves and summaries of a part."""
    out = {"command": "python benchmarks/study_heterogeneity.py " + " ".join(args),
           "machine": "shared 2-core CPU, other jobs running", "seed": 0,
           "runs": {name: {"curves": res, "summary": summary(res, target)} for name, res in curves.items()}}
    path = ROOT / f"benchmarks/results/heterogeneity_{part}.json"
    path.write_text(json.dumps(out, indent=1))
    for name, run_ in out["runs"].items():
        for k, v in run_["summary"].items():
            print(part, name, k, v, flush=True)


def save(name: str, res: dict, title: str, key: str = "acc") -> None:
    (ROOT / "runs/study").mkdir(parents=True, exist_ok=True)
    (ROOT / "docs/img").mkdir(parents=True, exist_ok=True)
    (ROOT / f"runs/study/{name}.json").write_text(json.dumps(res, indent=1))
    plot_curves({k: (v["rounds"], v[key]) for k, v in res.items()}, ROOT / f"docs/img/{name}.png", title=title)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("parts", nargs="*", default=["prox", "mnist", "nova"])
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--eval-every", type=int, default=5)
    ap.add_argument("--target", type=float, default=None, help="accuracy for rounds-to-target")
    ap.add_argument("--alphas", type=float, nargs="+", default=[0.5], help="cifar: Dirichlet alphas")
    ap.add_argument("--algos", nargs="+", default=["fedavg", "fedprox", "scaffold"], choices=sorted(CIFAR_ALGOS),
                    help="cifar: algorithms; each finished run is merged into heterogeneity_cifar.json")
    a = ap.parse_args()
    argv = sys.argv[1:]
    if "prox" in a.parts:
        res = part_prox(a.rounds or 100)
        save("prox_synthetic", res, "synthetic(1,1), 90% stragglers: test accuracy")
        save("prox_synthetic_loss", res, "synthetic(1,1), 90% stragglers: training loss", key="train_loss")
    if "mnist" in a.parts:
        curves = {}
        for alpha in (0.1, 0.5):
            curves[f"mnist_dir{alpha}"] = part_mnist(a.rounds or 100, alpha, a.eval_every)
            save(f"mnist_dir{alpha}", curves[f"mnist_dir{alpha}"], f"MNIST 2NN, Dirichlet({alpha})")
        write_result("mnist", curves, a.target or 0.9, argv)
    if "nova" in a.parts:
        res = part_nova(a.rounds or 100, a.eval_every)
        save("nova_mnist", res, "MNIST 2NN Dir(0.1), E ~ U{2..5}")
        write_result("nova", {"nova_mnist": res}, a.target or 0.9, argv)
    if "cifar" in a.parts:
        for alpha in a.alphas:
            name = f"cifar10_dir{alpha}"
            part_cifar(a.rounds or 50, a.eval_every, alpha, a.algos,
                       lambda label, res, n=name: merge_cifar(n, label, res, a.target or 0.4, argv))

if __name__ == "__main__":
    main()
