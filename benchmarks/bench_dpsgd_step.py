"""The cost of DP-SGD's step against plain SGD's, per model (the table in docs/dp.md).

One client of 200 MNIST-shaped examples, B = 10, one epoch (20 steps) through ``train_local`` with and
without ``LocalSGD.example_dp``, one torch thread, best of ``--repeats`` (10), interleaved in one run.
Prints the table and writes it with the run's settings to ``--out`` (default
``benchmarks/results/dpsgd_step.json``).

    .venv/bin/python benchmarks/bench_dpsgd_step.py
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from hamrah.algorithms import LocalSGD, train_local
from hamrah.algorithms.base import ExampleDP
from hamrah.core.files import write_atomic
from hamrah.data.federated import ArrayData
from hamrah.models.zoo import CNN, LogReg, TwoNN

N, B = 200, 10


def ms_per_step(model: torch.nn.Module, data: ArrayData, plan: LocalSGD, repeats: int) -> float:
    params = {k: v.detach().clone() for k, v in model.named_parameters()}
    best = float("inf")
    for r in range(repeats):
        t0 = time.perf_counter()
        train_local(model, params, data, plan, np.random.default_rng(r))
        best = min(best, time.perf_counter() - t0)
    return 1000 * best / (N // B)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "dpsgd_step.json"))
    ap.add_argument("--repeats", type=int, default=10, help="epochs timed per model and mode; the best is kept")
    args = ap.parse_args()
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    rows = []
    print("| model | SGD ms/step | DP-SGD ms/step | ratio |")
    print("|---|---|---|---|")
    for name, make, shape in (("logreg", LogReg, (784,)), ("2NN", TwoNN, (784,)), ("CNN", CNN, (1, 28, 28))):
        torch.manual_seed(0)
        model = make()
        data = ArrayData(torch.rand(N, *shape, generator=g), torch.randint(0, 10, (N,), generator=g))
        sgd = ms_per_step(model, data, LocalSGD(1, B, 0.1), args.repeats)
        plan = LocalSGD(1, B, 0.1, example_dp=ExampleDP(1.0, 1.0, poisson=False))
        dp = ms_per_step(model, data, plan, args.repeats)
        print(f"| {name} | {sgd:.2f} | {dp:.2f} | {dp / sgd:.1f}x |", flush=True)
        rows.append({"model": name, "sgd_ms_per_step": sgd, "dpsgd_ms_per_step": dp, "ratio": dp / sgd})
    meta = {
        "command": f"python benchmarks/bench_dpsgd_step.py --repeats {args.repeats}",
        "examples": N,
        "batch_size": B,
        "steps_per_repeat": N // B,
        "repeats": args.repeats,
        "timing": "wall time of one epoch, best of the repeats, per step",
        "torch_threads": 1,
        "example_dp": {"clip": 1.0, "noise_multiplier": 1.0, "poisson": False},
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": platform.machine(),
        "machine": "shared 2-core CPU machine (other jobs running)",
        "load_average_1min_after": os.getloadavg()[0],
    }
    write_atomic(args.out, json.dumps({"meta": meta, "results": rows}, indent=2) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
