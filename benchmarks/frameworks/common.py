"""The shared workload of the framework comparison, written without hamrah (it runs in a separate venv).

MNIST from the repo's IDX files (``data/mnist``), split IID over 100 clients of 600 examples, the
2NN of McMahan et al. 2017 (784-200-200-10, ReLU), FedAvg with C = 0.1 (10 clients a round), E = 1,
B = 10, lr = 0.1, 50 rounds, one evaluation on the 10,000 test images at the end.
"""

from __future__ import annotations

import gzip
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

DATA = Path(os.environ.get("HAMRAH_DATA", Path(__file__).resolve().parents[2] / "data")) / "mnist"
CLIENTS, FRACTION, EPOCHS, BATCH, LR = 100, 0.1, 1, 10, 0.1
ROUNDS = int(os.environ.get("FW_ROUNDS", "50"))
COHORT = int(CLIENTS * FRACTION)
START = time.perf_counter()


def _idx(name: str) -> np.ndarray:
    raw = gzip.open(DATA / name, "rb").read()
    ndim = raw[3]
    dims = np.frombuffer(raw, dtype=">u4", count=ndim, offset=4).astype(np.int64)
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(tuple(dims))


def load() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return MNIST train and test as float32 [N, 784] in [0, 1] and int64 labels."""

    def x(name: str) -> torch.Tensor:
        return torch.from_numpy(_idx(name).reshape(-1, 784).astype(np.float32) / 255.0)

    def y(name: str) -> torch.Tensor:
        return torch.from_numpy(_idx(name).astype(np.int64))

    return (
        x("train-images-idx3-ubyte.gz"),
        y("train-labels-idx1-ubyte.gz"),
        x("t10k-images-idx3-ubyte.gz"),
        y("t10k-labels-idx1-ubyte.gz"),
    )


def iid_split(n: int, seed: int = 0) -> list[np.ndarray]:
    """Return CLIENTS index arrays of equal size, a random IID split."""
    return np.array_split(np.random.default_rng(seed).permutation(n), CLIENTS)


def two_nn() -> nn.Sequential:
    return nn.Sequential(nn.Linear(784, 200), nn.ReLU(), nn.Linear(200, 200), nn.ReLU(), nn.Linear(200, 10))


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def report(framework: str, acc: float, **extra) -> None:
    """Print the one JSON line the driver reads (time since this module was imported, too)."""
    print(
        json.dumps(
            {
                "framework": framework,
                "accuracy": acc,
                "rounds": ROUNDS,
                "in_process_s": time.perf_counter() - START,
                **extra,
            }
        ),
        flush=True,
    )
