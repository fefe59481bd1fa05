"""Train a cohort's clients in worker processes, one torch thread each.

On a few CPU cores a convolutional model trains faster as independent single-threaded clients side
by side than as one client at a time with every core on small batches. Workers receive the model
and the federated data once (tensors travel through shared memory); per round each gets the global
model and its share of client ids, and derives every client's random stream from the same seeds as
the in-process path, so results match it.
"""

from __future__ import annotations

import copy
from typing import Sequence

import numpy as np
import torch
import torch.multiprocessing as mp
from torch import nn

from hamrah.algorithms.base import LocalSGD
from hamrah.algorithms.local import LocalResult, train_local
from hamrah.core.params import Params
from hamrah.core.seeds import client_rng
from hamrah.data.federated import FederatedDataset
from hamrah.simulation.batched import train_cohort

_STATE: dict = {}


def _init(model: nn.Module, data: FederatedDataset) -> None:
    torch.set_num_threads(1)
    # Tensors arrive in shared memory, the same storage in every worker: give each worker its own
    # parameters to train in place. The data stays shared (read only).
    _STATE["model"], _STATE["data"] = copy.deepcopy(model), data


def train_clients(
    model: nn.Module, data: FederatedDataset, params: Params, ids: Sequence[int], plan: LocalSGD,
    seed: int, round_idx: int, batched: bool,
) -> list[LocalResult]:
    """Train clients ``ids`` from ``params``, batched or one after another."""
    datas = [data.client_data(c) for c in ids]
    rngs = [client_rng(seed, round_idx, c) for c in ids]
    ignore = data.dataset.ignore_index
    if batched:
        return train_cohort(model, params, datas, plan, rngs, ignore)
    return [train_local(model, params, d, plan, r, ignore) for d, r in zip(datas, rngs)]


def _work(args: tuple) -> list[LocalResult]:
    return train_clients(_STATE["model"], _STATE["data"], *args)


def split_by_size(ids: Sequence[int], sizes: Sequence[int], parts: int) -> list[list[int]]:
    """Deal client ids into ``parts`` groups of similar total size (largest first, greedy)."""
    groups: list[list[int]] = [[] for _ in range(parts)]
    load = np.zeros(parts)
    for i in sorted(range(len(ids)), key=lambda i: -sizes[i]):
        g = int(load.argmin())
        groups[g].append(ids[i])
        load[g] += sizes[i]
    return [g for g in groups if g]


class ProcessPool:
    """A pool of ``workers`` processes, each holding a copy of the model and the data."""

    def __init__(self, model: nn.Module, data: FederatedDataset, workers: int):
        self.workers = workers
        self._pool = mp.get_context("spawn").Pool(workers, initializer=_init, initargs=(model, data))

    def train(
        self, params: Params, ids: Sequence[int], sizes: Sequence[int], plan: LocalSGD,
        seed: int, round_idx: int, batched: bool,
    ) -> dict[int, LocalResult]:
        """Train clients ``ids`` across the workers; return each client's result by id."""
        groups = split_by_size(list(ids), list(sizes), self.workers)
        jobs = [(params, g, plan, seed, round_idx, batched) for g in groups]
        out: dict[int, LocalResult] = {}
        for group, results in zip(groups, self._pool.map(_work, jobs)):
            out.update(zip(group, results))
        return out

    def close(self) -> None:
        self._pool.terminate()
        self._pool.join()
