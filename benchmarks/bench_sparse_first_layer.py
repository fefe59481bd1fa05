"""Would the batched 2NN step gain from computing its first layer over only the pixels a batch uses?

One SGD step's first layer for ten stacked clients (batch 10, 784 -> 200): dense (the forward
``baddbmm`` and the in-place ``baddbmm_`` update the trainer runs) against gathering the weight rows
of the ``--used`` pixels each client's batch touches, multiplying those, and scattering the update
back (``index_copy_``). MNIST batches of ten use about half the pixels (``--used 420``).

    python benchmarks/bench_sparse_first_layer.py
"""

from __future__ import annotations

import argparse
import time

import torch


def per_call_us(fn, repeats: int) -> float:
    for _ in range(50):
        fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--used", type=int, default=420, help="pixels a client's batch touches (of 784)")
    ap.add_argument("--repeats", type=int, default=2000)
    args = ap.parse_args()
    k, b, n_in, n_out, used = 10, 10, 784, 200, args.used
    torch.manual_seed(0)
    x, dz = torch.rand(k, b, n_in), torch.randn(k, b, n_out)
    bias = torch.zeros(k, 1, n_out)
    w = torch.randn(k, n_out, n_in) * 0.01  # the trainer's layout: [K, out, in]
    wt = w.transpose(1, 2).contiguous().view(k * n_in, n_out)  # rows per input pixel, for the gather
    cols = torch.stack([torch.randperm(n_in)[:used].sort().values for _ in range(k)])
    rows = (cols + torch.arange(k).unsqueeze(1) * n_in).flatten()
    xg = x.gather(2, cols.unsqueeze(1).expand(k, b, used))

    def dense() -> None:
        torch.baddbmm(bias, x, w.transpose(1, 2))
        w.baddbmm_(dz.transpose(1, 2), x, alpha=-1e-9)

    def sparse() -> None:
        wg = wt.index_select(0, rows).view(k, used, n_out)
        torch.baddbmm(bias, xg, wg)
        wg.baddbmm_(xg.transpose(1, 2), dz, alpha=-1e-9)
        wt.index_copy_(0, rows, wg.view(-1, n_out))

    for name, fn in (("dense", dense), (f"sparse ({used} of {n_in} pixels)", sparse)):
        print(f"{name}: {per_call_us(fn, args.repeats):.0f} us per step's first layer", flush=True)


if __name__ == "__main__":
    main()
