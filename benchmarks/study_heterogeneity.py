"""Heterogeneity study: FedProx vs FedAvg with stragglers, five algorithms on MNIST Dirichlet label skew,
FedNova vs FedAvg with heterogeneous local epochs, up to five algorithms and several Dirichlet alphas on the
bundled CIFAR-10 subset (a slightly
lossy JPEG copy). Writes runs/study/<name>.json, docs/img/<name>.png and
benchmarks/results/heterogeneity_<part>.json (every curve of the part plus a summary: accuracy at the last
common round and rounds to --target).

Usage: python benchmarks/study_heterogeneity.py [prox|mnist|nova|cifar|grid|scaffold-lr ...] [--rounds N]
       [--eval-every K] [--target A] [--alphas 0.1 0.5] [--algos fedavg fedprox scaffold fednova fedadam]
       [--seeds 0 1 2] [--fedadam-lr 0.003 --fedadam-tau 1e-3] [--out NAME]
       grid: [--optimizer fedadam|fedyogi|fedadagrad|fedavgm] [--server-lrs 0.001,0.003,0.01,0.03,0.1]
             [--taus 1e-3,1e-2] [--beta1 B]  (server-lr grid on MNIST Dirichlet, every point kept)
       scaffold-lr: [--lrs 0.05,0.02,0.01] [--algos fedavg scaffold scaffold-uniform]  (CIFAR subset)
Sized to a few minutes per part on a shared 2-core CPU machine.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import sys
import time
from pathlib import Path

import numpy as np

from hamrah.algorithms import build
from hamrah.core.aggregate import weighted_mean
from hamrah.core.errors import ConfigError
from hamrah.core.seeds import partition_rng
from hamrah.data import FederatedDataset, federate, load_dataset, partition
from hamrah.experiments.plots import plot_curves
from hamrah.models import build_model
from hamrah.simulation import SimulationConfig, Simulator, seeded
from hamrah.simulation.heterogeneity import Heterogeneity

ROOT = Path(__file__).resolve().parents[1]


BATCHED: bool | None = None  # --sequential sets False: one client at a time (faster with very unequal sizes)


def run(fed, model_name, algo, rounds, eval_every, het=None, seed=0, aggregator=None):
    """Return (rounds, test accuracies, train losses, wall seconds) of one simulated run."""
    sim = Simulator(
        seeded(lambda: build_model(model_name, fed.dataset), seed),
        fed,
        algo,
        SimulationConfig(rounds=rounds, eval_every=eval_every, seed=seed, heterogeneity=het, batched=BATCHED),
        aggregator=aggregator,
    )
    t = time.perf_counter()
    res = sim.run()
    h = res.history
    return {
        "rounds": [r.round for r in h],
        "acc": [r.test_accuracy for r in h],
        "train_loss": [r.train_loss for r in h],
        "test_loss": [r.test_loss for r in h],
        "wall_s": round(time.perf_counter() - t, 1),
    }


def part_prox(rounds: int) -> dict:
    """Li et al. 2020 Fig. 1: synthetic(1,1), 30 clients, 10 per round, E=20, B=10, lr=0.01, 90% stragglers."""
    fed = federate(load_dataset("synthetic_1_1"), "natural", None, 0)
    het = Heterogeneity(straggler_fraction=0.9)
    base = dict(client_fraction=10 / 30, local_epochs=20, batch_size=10, lr=0.01)
    out = {}
    for label, name, extra in [
        ("FedAvg (drops stragglers)", "fedavg", {}),
        ("FedProx mu=0", "fedprox", {"mu": 0.0}),
        ("FedProx mu=1", "fedprox", {"mu": 1.0}),
    ]:
        out[label] = run(fed, "logreg", build(name, **base, **extra), rounds, 5, het)
        print(label, out[label]["acc"][-1], out[label]["wall_s"], flush=True)
    return out


MNIST_BASE = dict(client_fraction=0.1, local_epochs=1, batch_size=10, lr=0.05)


def mnist_algos(fedadam_lr: float = 0.003, fedadam_tau: float = 1e-3) -> dict:
    """Return name -> (label, extra hyperparameters) of the MNIST study's algorithms."""
    adam = "FedAdam" if (fedadam_lr, fedadam_tau) == (0.003, 1e-3) else f"FedAdam lr={fedadam_lr:g} tau={fedadam_tau:g}"
    return {
        "fedavg": ("FedAvg", {}),
        "fedprox": ("FedProx mu=0.01", {"mu": 0.01}),
        "scaffold": ("SCAFFOLD", {"num_clients": 100}),
        "fednova": ("FedNova", {}),
        "fedadam": (adam, {"server_lr": fedadam_lr, "tau": fedadam_tau}),
    }


def mnist_federated(alpha: float, seed: int = 0) -> FederatedDataset:
    """Split MNIST over 100 clients by Dirichlet(alpha) label skew (Hsu et al. 2019) with ``seed``."""
    return federate(load_dataset("mnist"), "dirichlet", 100, seed, alpha=alpha)


def part_mnist(rounds: int, alpha: float, eval_every: int, seed: int = 0, algos: dict | None = None) -> dict:
    """Five algorithms on MNIST 2NN with Dirichlet(alpha) label skew (Hsu et al. 2019), 100 clients, 10 per round.

    ``seed`` sets the partition, the client sampling and the model's initialisation.
    """
    fed = mnist_federated(alpha, seed)
    out = {}
    for name, (label, extra) in (algos or mnist_algos()).items():
        out[label] = run(fed, "2nn", build(name, **MNIST_BASE, **extra), rounds, eval_every, seed=seed)
        print(alpha, seed, label, out[label]["acc"][-1], out[label]["wall_s"], flush=True)
    return out


def grid_points(optimizer: str, server_lrs: list[float], taus: list[float], beta1: float | None) -> list[dict]:
    """Return the server hyperparameters of a grid: server_lr x tau (FedAvgM: server_lr only)."""
    extra = {} if beta1 is None else {"beta1": beta1}
    if optimizer == "fedavgm":
        return [{"server_lr": lr, **extra} for lr in server_lrs]
    return [{"server_lr": lr, "tau": t, **extra} for lr in server_lrs for t in taus]


def grid_label(optimizer: str, hp: dict) -> str:
    return optimizer + " " + " ".join(f"{k}={v:g}" for k, v in hp.items())


def part_grid(
    rounds: int, alpha: float, eval_every: int, optimizer: str, points: list[dict], on_done, seed: int = 0
) -> None:
    """Run one FedOpt optimizer at every server hyperparameter point on MNIST 2NN, Dirichlet(alpha).

    Clients as in the MNIST study (E = 1, B = 10, client lr 0.05). Calls ``on_done(label, hp, result)`` per point.
    """
    fed = mnist_federated(alpha, seed)
    for hp in points:
        label = grid_label(optimizer, hp)
        res = run(fed, "2nn", build(optimizer, **MNIST_BASE, **hp), rounds, eval_every, seed=seed)
        print(alpha, label, res["acc"][-1], max(res["acc"]), res["wall_s"], flush=True)
        on_done(label, hp, res)


def last_mean(res: dict, k: int = 3) -> float:
    """Return the mean test accuracy of the last ``k`` evaluations (the grid's selection score)."""
    return float(np.mean(res["acc"][-k:]))


def merge_grid(run_name: str, optimizer: str, label: str, hp: dict, res: dict, args: list[str]) -> None:
    """Add one grid point to benchmarks/results/heterogeneity_fedopt_grid.json and re-pick the best per optimizer."""
    path = ROOT / "benchmarks/results/heterogeneity_fedopt_grid.json"
    (ROOT / "runs").mkdir(exist_ok=True)
    with open(ROOT / "runs/heterogeneity_fedopt_grid.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        data = json.loads(path.read_text()) if path.exists() else {"runs": {}}
        data["machine"], data["seed"] = "shared 2-core CPU, other jobs running", 0
        data["selection"] = "highest mean test accuracy over the last 3 evaluations (ties: higher final accuracy)"
        data.setdefault("commands", {})[f"{run_name}/{label}"] = "python benchmarks/study_heterogeneity.py " + " ".join(
            args
        )
        grid = data["runs"].setdefault(run_name, {}).setdefault(optimizer, {"points": {}})
        grid["points"][label] = {
            "hyperparameters": hp,
            "final": res["acc"][-1],
            "round": res["rounds"][-1],
            "best": max(res["acc"]),
            "last3_mean": last_mean(res),
            "curve": res,
        }
        pts = grid["points"]
        grid["selected"] = max(pts, key=lambda k: (round(pts[k]["last3_mean"], 4), pts[k]["final"]))
        path.write_text(json.dumps(data, indent=1))


def uniform_mean(deltas: list, weights: list[float]):
    """Aggregate with equal weights 1/|S| (SCAFFOLD's paper), ignoring n_k."""
    return weighted_mean(deltas, [1.0] * len(deltas))


def part_scaffold_lr(rounds: int, eval_every: int, alpha: float, lrs: list[float], algos: list[str], on_done) -> None:
    """SCAFFOLD's stability on the CIFAR-10 subset against the client lr, beside FedAvg at the same lr.

    ``scaffold-uniform`` averages Delta y with 1/|S| (the paper's weights) instead of n_k.
    """
    fed = cifar_federated(alpha)
    for lr in lrs:
        base = dict(client_fraction=0.2, local_epochs=2, batch_size=20, lr=lr)
        for name in algos:
            agg = uniform_mean if name == "scaffold-uniform" else None
            algo_name = "scaffold" if name.startswith("scaffold") else name
            extra = {"num_clients": 50} if algo_name == "scaffold" else {}
            sim_algo = build(algo_name, **base, **extra)
            res = run(fed, "cnn", sim_algo, rounds, eval_every, aggregator=agg)
            label = f"{name} lr={lr:g}"
            print(alpha, label, res["acc"][-1], max(res["acc"]), res["wall_s"], flush=True)
            on_done(label, res)


def merge_results(
    file: str, run_name: str, label: str, res: dict, target: float, args: list[str], seed: int = 0
) -> dict:
    """Add one curve to benchmarks/results/<file> (kept runs are not touched); return the run's curves."""
    path = ROOT / f"benchmarks/results/{file}"
    (ROOT / "runs").mkdir(exist_ok=True)
    with open(ROOT / f"runs/{file}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        data = json.loads(path.read_text()) if path.exists() else {"runs": {}}
        data["machine"] = "shared 2-core CPU, other jobs running"
        data.setdefault("commands", {})[f"{run_name}/{label}"] = "python benchmarks/study_heterogeneity.py " + " ".join(
            args
        )
        entry = data["runs"].setdefault(run_name, {"curves": {}})
        entry["seed"] = seed
        entry["curves"][label] = res
        entry["summary"] = summary(entry["curves"], target)
        path.write_text(json.dumps(data, indent=1))
    return entry["curves"]


def seed_stats(file: str, target: float) -> dict:
    """Add to benchmarks/results/<file> the mean and std over seeds of each alpha's and algorithm's summary."""
    path = ROOT / f"benchmarks/results/{file}"
    data = json.loads(path.read_text())
    by: dict = {}
    for name, entry in data["runs"].items():
        alpha = name.split("_seed")[0]
        for label, s in entry["summary"].items():
            s = dict(s, last3=last_mean(entry["curves"][label]))
            by.setdefault(alpha, {}).setdefault(label, []).append((entry["seed"], s))
    stats = {}
    for alpha, labels in by.items():
        for label, rows in labels.items():
            acc = np.array([s["acc"] for _, s in rows])
            best = np.array([s["best"] for _, s in rows])
            hit = [s["rounds_to_target"] for _, s in rows]
            stats.setdefault(alpha, {})[label] = {
                "seeds": [sd for sd, _ in rows],
                "round": rows[0][1]["round"],
                "acc": acc.tolist(),
                "acc_mean": float(acc.mean()),
                "acc_std": float(acc.std(ddof=1)) if len(acc) > 1 else 0.0,
                "best_mean": float(best.mean()),
                "best_std": float(best.std(ddof=1)) if len(best) > 1 else 0.0,
                "last3": [s["last3"] for _, s in rows],
                "last3_mean": float(np.mean([s["last3"] for _, s in rows])),
                "last3_std": float(np.std([s["last3"] for _, s in rows], ddof=1)) if len(rows) > 1 else 0.0,
                "target": target,
                "rounds_to_target": hit,
            }
    for alpha, labels in by.items():
        curves = {}
        for label in labels:
            runs = [e["curves"][label] for n, e in data["runs"].items() if n.startswith(alpha + "_seed")]
            curves[f"{label} (mean of {len(runs)} seeds)"] = {
                "rounds": runs[0]["rounds"],
                "acc": np.mean([r["acc"] for r in runs], axis=0).tolist(),
            }
        save(f"{alpha}_seeds", curves, f"MNIST 2NN, Dirichlet({alpha.removeprefix('mnist_dir')}): mean over seeds")
    data["over_seeds"] = stats
    data["std"] = "sample standard deviation (ddof = 1) over seeds"
    path.write_text(json.dumps(data, indent=1))
    for alpha, labels in stats.items():
        for label, v in labels.items():
            print(alpha, label, f"{v['acc_mean']:.4f} +- {v['acc_std']:.4f}", v["acc"], v["rounds_to_target"])
    return stats


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


CIFAR_ALGOS = {
    "fedavg": ("FedAvg", {}),
    "fedprox": ("FedProx mu=0.01", {"mu": 0.01}),
    "scaffold": ("SCAFFOLD", {"num_clients": 50}),
    "fednova": ("FedNova", {}),
    "fedadam": ("FedAdam", {"server_lr": 0.003, "tau": 1e-3}),
}


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
        data.setdefault("commands", {})[f"{run_name}/{label}"] = "python benchmarks/study_heterogeneity.py " + " ".join(
            args
        )
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
    return {
        k: {
            "round": last,
            "acc": v["acc"][v["rounds"].index(last)],
            "best": max(v["acc"]),
            "target": target,
            "rounds_to_target": rounds_to(v, target),
            "wall_s": v["wall_s"],
        }
        for k, v in res.items()
    }


def write_result(part: str, curves: dict, target: float, args: list[str]) -> None:
    """Write benchmarks/results/heterogeneity_<part>.json: the command, curves and summaries of a part."""
    out = {
        "command": "python benchmarks/study_heterogeneity.py " + " ".join(args),
        "machine": "shared 2-core CPU, other jobs running",
        "seed": 0,
        "runs": {name: {"curves": res, "summary": summary(res, target)} for name, res in curves.items()},
    }
    path = ROOT / f"benchmarks/results/heterogeneity_{part}.json"
    path.write_text(json.dumps(out, indent=1))
    for name, run_ in out["runs"].items():
        for k, v in run_["summary"].items():
            print(part, name, k, v, flush=True)


def save_scaffold_lr(run_name: str, label: str, res: dict, target: float, args: list[str]) -> None:
    """Merge one run into benchmarks/results/heterogeneity_scaffold_lr.json and redraw its plot."""
    curves = merge_results("heterogeneity_scaffold_lr.json", run_name, label, res, target, args)
    alpha = run_name.removeprefix("cifar10_dir")
    save(f"scaffold_lr_cifar10_dir{alpha}", curves, f"CIFAR-10 subset CNN, Dir({alpha}): SCAFFOLD vs client lr")


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
    ap.add_argument(
        "--alphas",
        type=float,
        nargs="+",
        default=None,
        help="Dirichlet alphas (cifar, scaffold-lr: 0.5 and 0.1 by default; mnist, grid: 0.1 and 0.5)",
    )
    ap.add_argument(
        "--algos",
        nargs="+",
        default=None,
        choices=sorted(CIFAR_ALGOS) + ["scaffold-uniform"],
        help="cifar: algorithms (default fedavg fedprox scaffold), merged into heterogeneity_cifar.json; "
        "mnist: a subset of the five; scaffold-lr: fedavg, scaffold, scaffold-uniform",
    )
    ap.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=[0],
        help="mnist: seeds (partition, sampling and init); more than one or --out writes --out",
    )
    ap.add_argument("--out", default=None, help="mnist: results file name under benchmarks/results/ (merged)")
    ap.add_argument("--fedadam-lr", type=float, default=0.003, help="mnist: FedAdam's server lr")
    ap.add_argument("--fedadam-tau", type=float, default=1e-3, help="mnist: FedAdam's tau")
    ap.add_argument(
        "--optimizer",
        default="fedadam",
        choices=["fedadam", "fedyogi", "fedadagrad", "fedavgm"],
        help="grid: the FedOpt server optimizer",
    )
    ap.add_argument("--server-lrs", default="0.001,0.003,0.01,0.03,0.1", help="grid: comma-separated server lrs")
    ap.add_argument("--taus", default="1e-3", help="grid: comma-separated taus (not used by fedavgm)")
    ap.add_argument("--beta1", type=float, default=None, help="grid: server beta1 (default: the algorithm's 0.9)")
    ap.add_argument("--lrs", default="0.05,0.02,0.01", help="scaffold-lr: comma-separated client lrs")
    ap.add_argument(
        "--sequential",
        action="store_true",
        help="train clients one at a time, never batched (the batched pass pads every client to the "
        "largest, slow under Dirichlet(0.1)); same SGD steps, equal up to float rounding",
    )
    a = ap.parse_args()
    argv = sys.argv[1:]
    global BATCHED
    BATCHED = False if a.sequential else None
    floats = lambda text: [float(x) for x in text.split(",")]
    if "prox" in a.parts:
        res = part_prox(a.rounds or 100)
        save("prox_synthetic", res, "synthetic(1,1), 90% stragglers: test accuracy")
        save("prox_synthetic_loss", res, "synthetic(1,1), 90% stragglers: training loss", key="train_loss")
    if "mnist" in a.parts and a.out is None and a.seeds == [0]:  # the documented one-seed table
        curves = {}
        for alpha in a.alphas or (0.1, 0.5):
            curves[f"mnist_dir{alpha}"] = part_mnist(a.rounds or 100, alpha, a.eval_every)
            save(f"mnist_dir{alpha}", curves[f"mnist_dir{alpha}"], f"MNIST 2NN, Dirichlet({alpha})")
        write_result("mnist", curves, a.target or 0.9, argv)
    elif "mnist" in a.parts:
        out = a.out or "heterogeneity_mnist_seeds.json"
        table = mnist_algos(a.fedadam_lr, a.fedadam_tau)
        if set(a.algos or ()) - set(table):
            ap.error(f"mnist: --algos must be among {', '.join(table)}")
        algos = {k: table[k] for k in (a.algos or table)}
        for seed in a.seeds:
            for alpha in a.alphas or (0.1, 0.5):
                for name, spec in algos.items():
                    res = part_mnist(a.rounds or 100, alpha, a.eval_every, seed, {name: spec})
                    for label, r in res.items():
                        merge_results(out, f"mnist_dir{alpha}_seed{seed}", label, r, a.target or 0.9, argv, seed)
        seed_stats(out, a.target or 0.9)
    if "grid" in a.parts:
        points = grid_points(a.optimizer, floats(a.server_lrs), floats(a.taus), a.beta1)
        for alpha in a.alphas or (0.1, 0.5):
            part_grid(
                a.rounds or 30,
                alpha,
                a.eval_every,
                a.optimizer,
                points,
                lambda label, hp, res, n=f"mnist_dir{alpha}": merge_grid(n, a.optimizer, label, hp, res, argv),
            )
    if "scaffold-lr" in a.parts:
        for alpha in a.alphas or (0.1,):
            name = f"cifar10_dir{alpha}"
            part_scaffold_lr(
                a.rounds or 40,
                a.eval_every,
                alpha,
                floats(a.lrs),
                a.algos or ["fedavg", "scaffold"],
                lambda label, res, n=name: save_scaffold_lr(n, label, res, a.target or 0.3, argv),
            )
    if "nova" in a.parts:
        res = part_nova(a.rounds or 100, a.eval_every)
        save("nova_mnist", res, "MNIST 2NN Dir(0.1), E ~ U{2..5}")
        write_result("nova", {"nova_mnist": res}, a.target or 0.9, argv)
    if "cifar" in a.parts and "scaffold-uniform" in (a.algos or ()):
        ap.error("cifar: scaffold-uniform is only for the scaffold-lr part")
    if "cifar" in a.parts:
        for alpha in a.alphas or [0.5]:
            name = f"cifar10_dir{alpha}"
            part_cifar(
                a.rounds or 50,
                a.eval_every,
                alpha,
                a.algos or ["fedavg", "fedprox", "scaffold"],
                lambda label, res, n=name: merge_cifar(n, label, res, a.target or 0.4, argv),
            )


if __name__ == "__main__":
    main()
