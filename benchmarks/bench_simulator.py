"""hamrah's simulator against a straightforward sequential PyTorch loop doing the same work.

McMahan et al. 2017's MNIST settings: 100 IID clients, C = 0.1, B = 10, lr = 0.1;
2NN with E = 1 for 50 rounds, CNN with E = 5 for 20 rounds (the paper's rounds to 99%; each is
~17 s sequentially on 2 cores). Both runs start from the same initial weights and sample the same
clients; the baseline shuffles with its own generator. Each run's time covers its final test
evaluation, and hamrah's its worker start-up. Reports seconds per round, the whole-run ratio, and
final test accuracy.

    python benchmarks/bench_simulator.py                # both models
    python benchmarks/bench_simulator.py --model 2nn --rounds 50

Large cohorts and start-up (issue 11), 2NN, IID, E = 1, B = 10:

    python benchmarks/bench_simulator.py --cohorts 0.1,0.2,0.5,1.0   # 10 rounds at each C, grouped vs one loop
    python benchmarks/bench_simulator.py --groups 1,2,5,10,20,50     # the group size, at C = 1.0
    python benchmarks/bench_simulator.py --startup 3                 # whole `hamrah run` process, 50 rounds
    python benchmarks/bench_simulator.py --imports 3 --before-src ../before/src   # import + data load CPU

``--cohorts`` trains each C twice in the same run, alternating: in groups of ``GROUP_SIZE`` clients
(now) and as one stacked loop over the whole cohort (before), and reports ms per round and per client,
wall and CPU (``time.process_time``: less sensitive to other jobs on a shared machine).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from hamrah.algorithms import FedAvg, LocalSGD
from hamrah.data import federate, load_mnist
from hamrah.models import build_model
from hamrah.simulation import SimulationConfig, Simulator, batched, seeded

ROOT = Path(__file__).resolve().parents[1]


def baseline_model(name: str) -> nn.Module:
    """The models as anyone would write them in plain PyTorch (NCHW, nn.MaxPool2d)."""
    if name == "2nn":
        return nn.Sequential(
            nn.Flatten(), nn.Linear(784, 200), nn.ReLU(), nn.Linear(200, 200), nn.ReLU(), nn.Linear(200, 10)
        )
    return nn.Sequential(
        nn.Conv2d(1, 32, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(3136, 512),
        nn.ReLU(),
        nn.Linear(512, 10),
    )


def run_baseline(name, init_state, fed, cohorts, epochs, batch, lr, seed=0):
    """FedAvg as a plain loop: per client load the global weights, SGD over shuffled batches, average."""
    model = baseline_model(name)
    model.load_state_dict(init_state)
    global_state = {k: v.clone() for k, v in model.state_dict().items()}
    gen = torch.Generator().manual_seed(seed)
    x_all, y_all = fed.dataset.train.x, fed.dataset.train.y
    start = time.perf_counter()
    for ids in cohorts:
        total = sum(len(fed.client_indices[c]) for c in ids)
        new_state = {k: torch.zeros_like(v) for k, v in global_state.items()}
        for c in ids:
            idx = torch.as_tensor(fed.client_indices[c])
            x, y = x_all[idx], y_all[idx]
            model.load_state_dict(global_state)
            opt = torch.optim.SGD(model.parameters(), lr=lr)
            for _ in range(epochs):
                perm = torch.randperm(len(idx), generator=gen)
                for i in range(0, len(idx), batch):
                    b = perm[i : i + batch]
                    opt.zero_grad()
                    F.cross_entropy(model(x[b]), y[b]).backward()
                    opt.step()
            for k, v in model.state_dict().items():
                new_state[k] += v * (len(idx) / total)
        global_state = new_state
    model.load_state_dict(global_state)
    with torch.no_grad():  # the final test evaluation is part of the run, as in hamrah's
        acc = float((model(fed.dataset.test.x).argmax(1) == fed.dataset.test.y).float().mean())
    return time.perf_counter() - start, acc


def gemm_gflops(n: int = 2048, repeats: int = 5) -> float:
    """Measured float32 matrix-multiply throughput of this machine (the practical compute ceiling)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e9


def train_flops_per_example(name: str) -> float:
    """Multiply-adds of one training example (forward, weight gradients, input gradients) x 2."""
    if name == "2nn":
        layers = [784 * 200, 200 * 200, 200 * 10]
        return 2 * (3 * sum(layers) - layers[0])  # no input gradient for the first layer
    conv1, conv2, fc1, fc2 = 28 * 28 * 32 * 25, 14 * 14 * 64 * 32 * 25, 3136 * 512, 512 * 10
    return 2 * (3 * (conv1 + conv2 + fc1 + fc2) - conv1)


def bench(name: str, rounds: int, epochs: int, batch: int = 10, lr: float = 0.1) -> dict:
    ds = load_mnist()
    fed = federate(ds, "iid", 100, seed=0)
    algo = FedAvg(0.1, LocalSGD(epochs, batch, lr))
    sim = Simulator(
        seeded(lambda: build_model(name, ds), 0), fed, algo, SimulationConfig(rounds=rounds, eval_every=rounds)
    )
    init = {k: v.clone() for k, v in sim.params.items()}
    cohorts = [[int(c) for c in sim.sample(r)] for r in range(1, rounds + 1)]
    base_state = dict(zip(baseline_model(name).state_dict(), init.values()))
    print(f"[{name}] sequential baseline: {rounds} rounds ...", flush=True)
    base_wall, base_acc = run_baseline(name, base_state, fed, cohorts, epochs, batch, lr)
    print(f"[{name}] hamrah (batched={sim.batched}, workers={sim.workers}): {rounds} rounds ...", flush=True)
    start = time.perf_counter()
    result = sim.run()
    ham_wall = time.perf_counter() - start
    eval_s = result.history[-1].elapsed_s  # run() time including its final evaluation
    examples_per_round = sum(len(fed.client_indices[c]) for c in cohorts[0]) * epochs
    flops_per_round = examples_per_round * train_flops_per_example(name)
    return {
        "model": name,
        "rounds": rounds,
        "clients_per_round": 10,
        "local_epochs": epochs,
        "batch_size": batch,
        "lr": lr,
        "hamrah_path": "batched (fused MLP)" if sim.batched else f"{sim.workers} worker processes",
        "baseline_s_per_round": base_wall / rounds,
        "hamrah_s_per_round": ham_wall / rounds,
        "baseline_total_s": base_wall,
        "hamrah_total_s": ham_wall,
        "hamrah_run_loop_s": eval_s,
        "speedup": base_wall / ham_wall,
        "baseline_final_accuracy": base_acc,
        "hamrah_final_accuracy": result.history[-1].test_accuracy,
        "accuracy_gap_points": 100 * abs(base_acc - result.history[-1].test_accuracy),
        "train_gflop_per_round": flops_per_round / 1e9,
        "baseline_gflops": flops_per_round * rounds / base_wall / 1e9,
        "hamrah_gflops": flops_per_round * rounds / ham_wall / 1e9,
    }


def _timed_run(ds, fed, fraction: float, rounds: int, group: int) -> tuple[float, float, int]:
    """Run FedAvg (2NN, E=1, B=10) for ``rounds`` with ``group`` clients per stacked loop.

    Returns (wall s, CPU s, clients per round) of ``Simulator.run``.
    """
    algo = FedAvg(fraction, LocalSGD(1, 10, 0.1))
    sim = Simulator(
        seeded(lambda: build_model("2nn", ds), 0), fed, algo, SimulationConfig(rounds=rounds, eval_every=rounds)
    )
    saved, batched.GROUP_SIZE = batched.GROUP_SIZE, group
    try:
        wall, cpu = time.perf_counter(), time.process_time()
        sim.run()
        return time.perf_counter() - wall, time.process_time() - cpu, sim.cohort
    finally:
        batched.GROUP_SIZE = saved


def bench_cohorts(fractions: list[float], rounds: int, repeats: int) -> list[dict]:
    """Per-round and per-client cost at each client fraction: grouped (now) against one loop (before)."""
    ds = load_mnist()
    fed = federate(ds, "iid", 100, seed=0)
    _timed_run(ds, fed, 0.1, 2, batched.GROUP_SIZE)  # warm up (first-touch allocations, oneDNN kernels)
    rows = []
    for c in fractions:
        runs: dict[str, list[tuple[float, float]]] = {"grouped": [], "one loop": []}
        for _ in range(repeats):
            for mode, group in (("grouped", batched.GROUP_SIZE), ("one loop", 10**9)):
                wall, cpu, k = _timed_run(ds, fed, c, rounds, group)
                runs[mode].append((wall, cpu))
        for mode, vals in runs.items():
            wall, cpu = min(v[0] for v in vals), min(v[1] for v in vals)
            rows.append(
                {
                    "client_fraction": c,
                    "clients_per_round": k,
                    "mode": mode,
                    "rounds": rounds,
                    "group_size": batched.GROUP_SIZE if mode == "grouped" else k,
                    "repeats": repeats,
                    "ms_per_round": 1e3 * wall / rounds,
                    "ms_per_client": 1e3 * wall / rounds / k,
                    "cpu_ms_per_round": 1e3 * cpu / rounds,
                    "cpu_ms_per_client": 1e3 * cpu / rounds / k,
                    "all_wall_s": [round(v[0], 3) for v in vals],
                    "all_cpu_s": [round(v[1], 3) for v in vals],
                }
            )
            print(
                f"C={c} ({k} clients) {mode}: {rows[-1]['ms_per_round']:.0f} ms/round, "
                f"{rows[-1]['ms_per_client']:.1f} ms/client (CPU {rows[-1]['cpu_ms_per_client']:.1f})",
                flush=True,
            )
    return rows


def bench_groups(groups: list[int], fraction: float, rounds: int, repeats: int) -> list[dict]:
    """Cost per client at client fraction ``fraction`` for each group size (to choose ``GROUP_SIZE``)."""
    ds = load_mnist()
    fed = federate(ds, "iid", 100, seed=0)
    _timed_run(ds, fed, 0.1, 2, batched.GROUP_SIZE)
    best: dict[int, list[float]] = {g: [] for g in groups}
    cpus: dict[int, list[float]] = {g: [] for g in groups}
    for _ in range(repeats):  # interleaved, so a burst of load hits every size alike
        for g in groups:
            wall, cpu, k = _timed_run(ds, fed, fraction, rounds, g)
            best[g].append(wall)
            cpus[g].append(cpu)
            print(
                f"  group {g}: {1e3 * wall / rounds / k:.1f} ms/client (CPU {1e3 * cpu / rounds / k:.1f})", flush=True
            )
    rows = [
        {
            "group_size": g,
            "client_fraction": fraction,
            "clients_per_round": k,
            "rounds": rounds,
            "ms_per_client": 1e3 * min(best[g]) / rounds / k,
            "cpu_ms_per_client": 1e3 * min(cpus[g]) / rounds / k,
        }
        for g in groups
    ]
    for r in rows:
        print(
            f"group {r['group_size']}: {r['ms_per_client']:.1f} ms/client (CPU {r['cpu_ms_per_client']:.1f})",
            flush=True,
        )
    return rows


def bench_startup(repeats: int, config: str = "configs/mnist_2nn_50.toml") -> list[dict]:
    """Whole-process time of ``hamrah run`` (start-up, 50 rounds, one evaluation, results written).

    Each repeat runs it once without the plot and once with it; the user cache keeps the decoded data
    set between runs (the first run ever decodes it). Returns one row per run.
    """
    rows = []
    for i in range(repeats):
        for plot in (False, True):
            out = Path("/tmp") / f"hamrah-bench-startup-{os.getpid()}-{i}-{int(plot)}"
            cmd = [sys.executable, "-m", "hamrah.cli", "run", config, "--out", str(out), "--quiet"] + (
                [] if plot else ["--no-plot"]
            )
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            start = time.perf_counter()
            subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
            wall = time.perf_counter() - start
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            summary = json.loads((out / "summary.json").read_text())
            cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
            rows.append(
                {
                    "plot": plot,
                    "process_s": wall,
                    "process_cpu_s": cpu,
                    "run_loop_s": summary["wall_s"],
                    "ms_per_round": 1e3 * summary["seconds_per_round"],
                    "accuracy": summary["final_accuracy"],
                }
            )
            print(
                f"hamrah run ({'with' if plot else 'no'} plot): {wall:.2f} s process ({cpu:.2f} s CPU), "
                f"{summary['wall_s']:.2f} s in rounds, {rows[-1]['ms_per_round']:.0f} ms/round",
                flush=True,
            )
    return rows


_IMPORTS = """
import json, sys, time
t = time.process_time()
import hamrah.experiments.runner  # what `hamrah run` imports
from hamrah.experiments.config import load_config
cfg = load_config("configs/mnist_2nn_50.toml")  # validation
imports = time.process_time() - t
from hamrah.data import load_mnist
t = time.process_time()
load_mnist()
heavy = [m for m in ("matplotlib", "dp_accounting", "tenseal", "phe", "grpc", "ray", "scipy") if m in sys.modules]
print(json.dumps({"import_cpu_s": imports, "load_mnist_cpu_s": time.process_time() - t, "heavy": heavy}))
"""


def bench_imports(repeats: int, before_src: str | None) -> list[dict]:
    """CPU time of importing what ``hamrah run`` imports (plus config validation) and of loading MNIST,
    in fresh interpreters, for this checkout and (``before_src``) another checkout's ``src``, interleaved."""
    rows = []
    srcs = [("now", str(ROOT / "src"))] + ([("before", before_src)] if before_src else [])
    for _ in range(repeats):
        for label, src in srcs:
            env = {**os.environ, "PYTHONPATH": src}
            out = subprocess.run(
                [sys.executable, "-c", _IMPORTS], cwd=ROOT, env=env, capture_output=True, text=True, check=True
            )
            rows.append({"code": label, "src": src, **json.loads(out.stdout.strip().splitlines()[-1])})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=["2nn", "cnn", "both"], default="both")
    p.add_argument("--rounds", type=int, default=50, help="2NN rounds")
    p.add_argument(
        "--cnn-rounds", type=int, default=20, help="CNN rounds (20: the paper's rounds to 99%% in this setting)"
    )
    p.add_argument("--out", default=None, help="JSON results (default benchmarks/results/simulator*.json)")
    p.add_argument("--cohorts", help="comma-separated client fractions: per-round and per-client cost (2NN)")
    p.add_argument("--groups", help="comma-separated group sizes: cost per client at --group-fraction")
    p.add_argument("--group-fraction", type=float, default=1.0)
    p.add_argument("--cohort-rounds", type=int, default=10)
    p.add_argument("--repeats", type=int, default=2, help="repeats of each --cohorts/--groups cell (best kept)")
    p.add_argument("--startup", type=int, metavar="N", help="N whole `hamrah run` processes (50 rounds)")
    p.add_argument("--imports", type=int, metavar="N", help="N fresh interpreters: import and MNIST-load CPU time")
    p.add_argument(
        "--before-src",
        help="with --imports: another checkout's src/ to compare (e.g. a worktree of the commit before the change)",
    )
    args = p.parse_args()
    if args.cohorts or args.groups or args.startup or args.imports:
        _extra(args)
        return
    args.out = args.out or str(Path(__file__).parent / "results" / "simulator.json")
    rows = []
    if args.model in ("2nn", "both"):
        rows.append(bench("2nn", args.rounds, epochs=1))
    if args.model in ("cnn", "both"):
        rows.append(bench("cnn", args.cnn_rounds, epochs=5))
    meta = {
        "gemm_gflops": gemm_gflops(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"meta": meta, "results": rows}, indent=2) + "\n")
    print(f"\nfloat32 GEMM on this machine: {meta['gemm_gflops']:.0f} GFLOP/s")
    print(
        "\n| model | rounds | baseline s/round | hamrah s/round | speedup | baseline acc | hamrah acc | gap (points) "
        "| baseline GFLOP/s | hamrah GFLOP/s | hamrah path |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['model']} (E={r['local_epochs']}, B={r['batch_size']}) | {r['rounds']} | "
            f"{r['baseline_s_per_round']:.3f} | "
            f"{r['hamrah_s_per_round']:.3f} | {r['speedup']:.2f}x | {r['baseline_final_accuracy']:.4f} | "
            f"{r['hamrah_final_accuracy']:.4f} | {r['accuracy_gap_points']:.2f} | {r['baseline_gflops']:.0f} | "
            f"{r['hamrah_gflops']:.0f} | {r['hamrah_path']} |"
        )
    print(f"\nwrote {args.out}")


def _extra(args: argparse.Namespace) -> None:
    """Run the --cohorts / --groups / --startup measurements and write them to one JSON file."""
    meta = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "load_avg_before": os.getloadavg(),
        "group_size": batched.GROUP_SIZE,
        "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "unset"),
    }
    out: dict = {"meta": meta}
    if args.cohorts:
        out["cohorts"] = bench_cohorts([float(c) for c in args.cohorts.split(",")], args.cohort_rounds, args.repeats)
    if args.groups:
        out["groups"] = bench_groups(
            [int(g) for g in args.groups.split(",")], args.group_fraction, args.cohort_rounds, args.repeats
        )
    if args.startup:
        out["startup"] = bench_startup(args.startup)
    if args.imports:
        out["imports"] = bench_imports(args.imports, args.before_src)
    meta["load_avg_after"] = os.getloadavg()
    path = Path(args.out or Path(__file__).parent / "results" / "simulator_cohorts.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"load average before {meta['load_avg_before']}, after {meta['load_avg_after']}\nwrote {path}")


if __name__ == "__main__":
    main()
