"""The cost of DP-SGD's step against plain SGD's, per model (the table in docs/dp.md).

One client of 200 MNIST-shaped examples, B = 10, one epoch (20 steps) through ``train_local`` with and
without ``LocalSGD.example_dp``, one torch thread, best of 3, interleaved in one run.

    .venv/bin/python benchmarks/bench_dpsgd_step.py
"""

from __future__ import annotations

import time

import numpy as np
import torch

from hamrah.algorithms import LocalSGD, train_local
from hamrah.algorithms.base import ExampleDP
from hamrah.data.federated import ArrayData
from hamrah.models.zoo import CNN, LogReg, TwoNN

N, B, REPEATS = 200, 10, 3


def ms_per_step(model: torch.nn.Module, data: ArrayData, plan: LocalSGD) -> float:
    params = {k: v.detach().clone() for k, v in model.named_parameters()}
    best = float("inf")
    for r in range(REPEATS):
        t0 = time.perf_counter()
        train_local(model, params, data, plan, np.random.default_rng(r))
        best = min(best, time.perf_counter() - t0)
    return 1000 * best / (N // B)


def main() -> None:
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    print("| model | SGD ms/step | DP-SGD ms/step | ratio |")
    print("|---|---|---|---|")
    for name, make, shape in (("logreg", LogReg, (784,)), ("2NN", TwoNN, (784,)), ("CNN", CNN, (1, 28, 28))):
        torch.manual_seed(0)
        model = make()
        data = ArrayData(torch.rand(N, *shape, generator=g), torch.randint(0, 10, (N,), generator=g))
        sgd = ms_per_step(model, data, LocalSGD(1, B, 0.1))
        dp = ms_per_step(model, data, LocalSGD(1, B, 0.1, example_dp=ExampleDP(1.0, 1.0, poisson=False)))
        print(f"| {name} | {sgd:.2f} | {dp:.2f} | {dp / sgd:.1f}x |", flush=True)


if __name__ == "__main__":
    main()
