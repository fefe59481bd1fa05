"""Train a cohort's clients in worker processes, one torch thread each.

On a few CPU cores a convolutional model trains faster as independent single-threaded clients side
by side than as one client at a time with every core on small batches. Workers receive the model
and the federated data once (tensors travel through shared memory); per round each gets a
:class:`RoundTask` with its share of client ids, and derives every client's random stream from the
same seeds as the in-process path, so results match it.
"""

from __future__ import annotations

import copy
import ctypes
import dataclasses
import logging
import pickle
import time
import traceback
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from multiprocessing.reduction import ForkingPickler
from typing import Protocol

import numpy as np
import torch
import torch.multiprocessing as mp
from torch import nn

from hamrah.algorithms.base import Algorithm, ClientResult, ClientUpdate, LocalSGD
from hamrah.algorithms.client import client_update
from hamrah.algorithms.transforms import Proximal
from hamrah.core.errors import WorkerFailed
from hamrah.core.params import Params, sub
from hamrah.core.seeds import client_rng
from hamrah.data.federated import ArrayData, FederatedDataset
from hamrah.simulation.batched import train_cohort
from hamrah.task import Task

log = logging.getLogger("hamrah.simulation")
QUIET_WARNING_S = 300.0  # a round whose workers have all been training this long is reported (and again after as long)

_STATE: dict = {}


@dataclass(frozen=True)
class RoundTask:
    """What a set of clients needs to train one round.

    Attributes:
        algorithm: whose client half runs.
        params: the global model.
        ids: the clients, and ``plans`` their local work (same order).
        seed, round_idx: derive each client's generator (``client_rng``).
        batched: train them in one batched loop (plain SGD, a proximal pull, personalized starts).
        broadcast: the round's server payload.
        states: client id -> the client's persistent state (stateful algorithms).
        data: client id -> data that replaces the client's own (a poisoned copy).
    """

    algorithm: Algorithm
    params: Params
    ids: list[int]
    plans: list[LocalSGD]
    seed: int
    round_idx: int
    batched: bool
    broadcast: Params | None = None
    states: dict[int, Params] = field(default_factory=dict)
    data: dict[int, ArrayData] = field(default_factory=dict)

    def subset(self, ids: list[int]) -> RoundTask:
        """Return the task for ``ids`` only."""
        plans = dict(zip(self.ids, self.plans))
        return dataclasses.replace(
            self,
            ids=ids,
            plans=[plans[c] for c in ids],
            states={c: self.states[c] for c in ids if c in self.states},
            data={c: self.data[c] for c in ids if c in self.data},
        )


def keep_freed_memory() -> None:
    """Keep freed blocks in glibc's heap instead of returning them to the OS.

    A training step frees and reallocates the same megabyte-sized activations every step; by default
    they come back as fresh mappings, tens to hundreds of page faults per CNN step
    (``benchmarks/bench_cnn_step.py``).
    """
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc: nothing to tune
        return
    mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD: blocks up to 32 MB come from the heap
    mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD: keep up to 1 GB of free heap


def worker_setup(
    model: nn.Module, data: FederatedDataset, fl_task: Task | None
) -> tuple[nn.Module, FederatedDataset, Task | None]:
    """Set a worker process up (one torch thread, freed memory kept) and return what it trains with.

    Tensors may arrive in memory shared by every worker: each gets its own parameters to train in
    place. The data stays shared (read only).
    """
    torch.set_num_threads(1)
    keep_freed_memory()
    return copy.deepcopy(model), data, fl_task


def _init(model: nn.Module, data: FederatedDataset, fl_task: Task | None = None) -> None:
    _STATE["model"], _STATE["data"], _STATE["fl_task"] = worker_setup(model, data, fl_task)


def _init_from(setup) -> None:
    """Set the worker up from its copy of the model, data and task, read from the ``setup`` queue (the
    tensors in shared memory); an error doing so (the user's classes do not import here) is kept and
    raised, named, by the first round's work: an initializer that raises leaves only a dead process."""
    try:
        _init(*ForkingPickler.loads(setup.get()))
    except BaseException as e:
        _STATE["setup_error"] = f"{type(e).__name__}: {e}".replace("\n", " ")


def train_clients(
    model: nn.Module, data: FederatedDataset, task: RoundTask, fl_task: Task | None = None
) -> list[ClientUpdate]:
    """Run the client half for ``task.ids``, batched or one after another through ``client_update``.

    ``fl_task`` is the user's task (its loss); the batched path runs only for the built-in cross-entropy.
    """
    rngs = [client_rng(task.seed, task.round_idx, c) for c in task.ids]
    ignore = data.dataset.ignore_index
    if task.batched:  # gathers each client's batches straight from the pooled set
        slices = [task.data[c] if c in task.data else data.client_slice(c) for c in task.ids]
        personal = task.algorithm.personalization
        if personal is not None:
            return _personal_cohort(model, task, slices, rngs, ignore, personal)
        pull = batch_pull(task.algorithm, task.params, task.broadcast) or 0.0  # FedProx's mu
        locs = train_cohort(model, task.params, slices, task.plans, rngs, ignore, pull=pull)
        return [
            ClientUpdate(
                ClientResult(
                    c, sub(loc.params, task.params), len(d), {"train_loss": loc.train_loss, "local_steps": loc.steps}
                )
            )
            for c, d, loc in zip(task.ids, slices, locs)
        ]
    datas = [task.data[c] if c in task.data else data.client_data(c) for c in task.ids]
    return [
        client_update(
            task.algorithm,
            model,
            task.params,
            d,
            r,
            client_state=task.states.get(c),
            broadcast=task.broadcast,
            ignore_index=ignore,
            client_id=c,
            plan=p,
            task=fl_task,
        )
        for c, d, r, p in zip(task.ids, datas, rngs, task.plans)
    ]


def batch_pull(algorithm: Algorithm, params: Params, broadcast: Params | None) -> float | None:
    """Return the proximal weight the batched trainer adds to run ``algorithm``'s client half from
    ``params`` (0 for plain SGD, FedProx's and FedNova's mu), or None when that client half is not one
    it runs (control variates, momentum, Adam, DP-SGD, a personalized algorithm with a transform)."""
    if (algorithm.stateful_clients and algorithm.personalization is None) or not algorithm.local_plan().plain_sgd:
        return None
    transforms = algorithm.local_transforms(params, broadcast, None)
    if not transforms:
        return 0.0
    only = transforms[0]
    if (
        len(transforms) == 1
        and isinstance(only, Proximal)
        and only.anchor is params
        and algorithm.personalization is None
    ):
        return only.mu
    return None


def _personal_cohort(model, task: RoundTask, slices, rngs, ignore, personal) -> list[ClientUpdate]:
    """The batched form of :func:`hamrah.algorithms.client_update` for a personalized algorithm: the
    cohort trains from each client's start, then (Ditto) each personal model trains with its pull
    toward the global model, the generators continuing as in the sequential client half."""
    g, states = task.params, [task.states.get(c) for c in task.ids]
    locs = train_cohort(model, g, slices, task.plans, rngs, ignore, starts=[personal.start(g, s) for s in states])
    passes = [personal.personal_pass(g, s) for s in states]
    trained: list = [None] * len(states)
    if passes[0] is not None:  # Ditto: each personal model from where it was, with its pull
        own = train_cohort(model, g, slices, task.plans, rngs, ignore, starts=[p[0] for p in passes], pull=passes[0][1])
        trained = [o.params for o in own]
    kept = [personal.keep(loc.params, t) for loc, t in zip(locs, trained)]
    return [
        ClientUpdate(
            ClientResult(
                c, personal.shared(sub(loc.params, g)), len(d), {"train_loss": loc.train_loss, "local_steps": loc.steps}
            ),
            state,
        )
        for c, d, loc, state in zip(task.ids, slices, locs, kept)
    ]


def _work(task: RoundTask) -> list[ClientUpdate]:
    """A worker's share of a round; what it raises reaches the run as raised, or as WorkerFailed naming it
    where it could not travel back (an exception that does not pickle, a SystemExit)."""
    if "setup_error" in _STATE:
        raise WorkerFailed(
            f"run.workers: a worker process could not load the model, the data or the task ({_STATE['setup_error']}); "
            "expected a task whose module each worker can import (installed, or beside the config), or "
            "run.workers = 1"
        )
    try:
        return train_clients(_STATE["model"], _STATE["data"], task, _STATE["fl_task"])
    except KeyboardInterrupt:
        raise
    except BaseException as e:
        raise _sendable(e) from None


def _sendable(e: BaseException) -> BaseException:
    """Return ``e`` where it survives the trip to the run's process, else a WorkerFailed that names it."""
    if isinstance(e, Exception):
        try:
            pickle.loads(pickle.dumps(e))
            return e
        except Exception as why:  # any failure to travel is reported the same way
            how = f"it could not be sent back: {type(why).__name__}: {why}"
    else:  # SystemExit and the like would end the run's process without a word
        how = "which would end the run's process"
    at = traceback.extract_tb(e.__traceback__)
    where = f" at {at[-1].filename}:{at[-1].lineno}" if at else ""
    return WorkerFailed(
        f"run.workers: a worker's clients raised {type(e).__name__}: {e}{where} ({how})".replace("\n", " ")
    )


def split_by_size(ids: list[int], sizes: list[int], parts: int) -> list[list[int]]:
    """Deal client ids into ``parts`` groups of similar total size (largest first, greedy)."""
    groups: list[list[int]] = [[] for _ in range(parts)]
    load = np.zeros(parts)
    for i in sorted(range(len(ids)), key=lambda i: -sizes[i]):
        g = int(load.argmin())
        groups[g].append(ids[i])
        load[g] += sizes[i]
    return [g for g in groups if g]


class ProcessPool:
    """A pool of ``workers`` processes, each holding a copy of the model and the data.

    A worker that dies (killed, out of memory, or a script without the ``if __name__ == "__main__":``
    guard, which every spawned worker runs again) is an error naming the likely cause, not a hang
    (``concurrent.futures`` notices a dead worker; ``multiprocessing.Pool`` waits for it for ever). A
    worker that cannot load the model or task, and an exception that cannot travel back (does not
    pickle, or a ``SystemExit``), are a :class:`WorkerFailed` naming them; the task's own exceptions are
    raised as they were.
    """

    def __init__(self, model: nn.Module, data: FederatedDataset, workers: int, fl_task: Task | None = None):
        self.workers = workers
        ctx = mp.get_context("spawn")
        # What each worker starts from goes through a queue, written by its feeder thread, not with the
        # process's start arguments: those the starting thread writes to the new process's pipe, and a
        # process that dies before reading them all (a script without the main guard) left that write,
        # and the run, blocked for ever once they passed the pipe's 64 KiB (any real data set's indices).
        self._setup = ctx.Queue()
        for _ in range(workers):  # one pickling each: a tensor's shared-memory handle is taken once
            self._setup.put(bytes(ForkingPickler.dumps((model, data, fl_task))))
        self._pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_from, initargs=(self._setup,))

    def train(self, task: RoundTask, sizes: list[int]) -> dict[int, ClientUpdate]:
        """Train ``task``'s clients across the workers; return each client's update by id.

        Raises:
            WorkerFailed: a worker process died.
        """
        groups = split_by_size(list(task.ids), list(sizes), self.workers)
        out: dict[int, ClientUpdate] = {}
        try:
            futures = [self._pool.submit(_work, task.subset(g)) for g in groups]
            started, pending = time.monotonic(), set(futures)
            while pending:  # a task blocked in its own code (a lock, a DataLoader's workers) looks like 0% CPU
                done, pending = wait(pending, timeout=QUIET_WARNING_S, return_when=FIRST_EXCEPTION)
                if any(f.exception() is not None for f in done):
                    break  # raised below, without waiting for the others
                if pending:
                    log.warning(
                        "round %d: %d of %d worker(s) still training after %.0f s (no worker died); a task "
                        "blocked in its own code (a lock, a DataLoader's worker processes) would look like this",
                        task.round_idx, len(pending), len(futures), time.monotonic() - started,
                    )  # fmt: skip
            for future in futures:
                if future.done() and future.exception() is not None:
                    future.result()  # the worker's error, as it was raised there
            for group, future in zip(groups, futures):
                out.update(zip(group, future.result()))
        except BrokenProcessPool:
            self.close()
            raise WorkerFailed(
                f"run.workers = {self.workers}: a worker process died (killed, out of memory, or started from "
                'a script without `if __name__ == "__main__":` around the run, which each worker runs '
                "again); expected the guard in a script, or run.workers = 1"
            ) from None
        return out

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._setup.cancel_join_thread()  # a worker that died unread leaves its copy in the pipe
        self._setup.close()


class Pool(Protocol):
    """Workers that train a round's clients: :class:`ProcessPool` or ``ray_pool.RayPool``."""

    workers: int

    def train(self, task: RoundTask, sizes: list[int]) -> dict[int, ClientUpdate]: ...

    def close(self) -> None: ...


def open_pool(backend: str, model: nn.Module, data: FederatedDataset, workers: int, fl_task: Task | None) -> Pool:
    """Start ``workers`` workers of ``backend`` (``"local"``: processes here; ``"ray"``: Ray actors)."""
    if backend == "ray":
        from hamrah.simulation.ray_pool import RayPool  # imports Ray: only when asked for

        return RayPool(model, data, workers, fl_task)
    return ProcessPool(model, data, workers, fl_task)
