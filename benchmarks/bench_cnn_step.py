"""One SGD step of McMahan's CNN on 10 MNIST-shaped images, three ways, on one thread.

- ``nn.Sequential`` (NCHW) with autograd and ``torch.optim.SGD``: the benchmark baseline's step;
- hamrah's ``CNN`` module (channels-last) with autograd: ``train_local``'s general loop;
- hamrah's hand-written step ``CNN.sgd_step`` (``hamrah.models.fused``): what plain SGD runs.

One thread, as in the simulator's worker processes (and the hand-written step on two threads).
Reports milliseconds per step (median of ``--repeats`` timed loops of ``--steps`` steps), then the
parts the hand-written step changes, timed alone, and the page faults per step with glibc's default
heap settings and with the workers' (``mallopt``). Writes ``benchmarks/results/cnn_step.json``.

    python benchmarks/bench_cnn_step.py
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from bench_simulator import baseline_model
from hamrah.models import CNN
from hamrah.simulation.parallel import keep_freed_memory


def _time(step, x, y, steps: int, repeats: int) -> float:
    for i in range(20):
        step(x[i * 10 : i * 10 + 10], y[i * 10 : i * 10 + 10])
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        for i in range(steps):
            j = (i * 10) % len(x)
            step(x[j : j + 10], y[j : j + 10])
        runs.append((time.perf_counter() - start) / steps * 1e3)
    return statistics.median(runs)


def _micro_us(fn, n: int = 500) -> float:
    for _ in range(20):
        fn()
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n * 1e6


def parts() -> dict[str, float]:
    """Microseconds of the operations the hand-written step replaces, and of their replacements."""
    cl = torch.channels_last
    z = torch.randn(10, 32, 28, 28)
    w, x = torch.randn(512, 3136), torch.randn(10, 3136)
    dz = torch.randn(10, 32, 14, 14).contiguous(memory_format=cl)
    a = torch.randn(10, 32, 14, 14).contiguous(memory_format=cl).relu()
    return {
        "max_pool2d 10x32x28x28, NCHW": _micro_us(lambda: F.max_pool2d(z, 2)),
        "max_pool2d 10x32x28x28, channels-last": _micro_us(lambda: F.max_pool2d(z.contiguous(memory_format=cl), 2)),
        "dense 10x3136 -> 512 as x @ W.T": _micro_us(lambda: x @ w.t()),
        "dense 10x3136 -> 512 as (W @ x.T).T": _micro_us(lambda: (w @ x.t()).t()),
        "ReLU mask as grad * (a > 0), channels-last": _micro_us(lambda: dz.mul(a > 0)),
        "ReLU mask as threshold_backward": _micro_us(lambda: torch.ops.aten.threshold_backward(dz, a, 0)),
    }


def page_faults_per_step(x, y, steps: int = 200) -> float:
    step = CNN().sgd_step(0.01)
    for _i in range(20):
        step(x[:10], y[:10])
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _i in range(steps):
        step(x[:10], y[:10])
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / steps


def _autograd_step(model):
    opt = torch.optim.SGD(model.parameters(), lr=0.01)

    def step(x, y):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()

    return step


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "cnn_step.json"))
    args = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    x, y = torch.rand(600, 1, 28, 28), torch.randint(0, 10, (600,))
    faults = {"default heap": page_faults_per_step(x, y)}  # first: before other work grows the heap
    keep_freed_memory()
    faults["heap kept (workers)"] = page_faults_per_step(x, y)
    variants = {
        "nn.Sequential NCHW, autograd + optim.SGD": _autograd_step(baseline_model("cnn")),
        "hamrah CNN (channels-last), autograd": _autograd_step(CNN()),
        "hamrah CNN, hand-written sgd_step": CNN().sgd_step(0.01),
    }
    rows = [
        {"variant": name, "ms_per_step": _time(step, x, y, args.steps, args.repeats)} for name, step in variants.items()
    ]
    micro = parts()
    torch.set_num_threads(2)
    rows.append(
        {
            "variant": "hamrah CNN, hand-written sgd_step, 2 threads",
            "ms_per_step": _time(CNN().sgd_step(0.01), x, y, args.steps, args.repeats),
        }
    )
    out = {
        "batch": 10,
        "torch": torch.__version__,
        "results": rows,
        "parts_us_1_thread": micro,
        "page_faults_per_step": faults,
    }
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print("| step (10 images) | ms per step |\n|---|---|")
    for r in rows:
        print(f"| {r['variant']} | {r['ms_per_step']:.2f} |")
    print("\n| part (1 thread) | us |\n|---|---|")
    for name, us in micro.items():
        print(f"| {name} | {us:.0f} |")
    print(f"\npage faults per hand-written step: {faults}")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
