"""Train a cohort's clients on a Ray cluster (``run.backend = "ray"``): the simulator across machines.

Each worker is a Ray actor with one CPU and one torch thread, placed with Ray's ``SPREAD`` strategy
over the cluster's machines. The model and the federated data go into Ray's object store once; each
actor builds its copy from there when it starts. Per round each actor trains its share of the
cohort (dealt by size, as for the local worker processes) through the same
:func:`hamrah.simulation.parallel.train_clients`, deriving every client's random stream from the
same seeds: the run gives the model the local worker processes give.

An actor that dies (its process killed, its machine lost) is restarted by Ray and its share of the
round retried on it, up to ``RESTARTS`` times; a share's updates depend only on its seeds, so the
round's result does not change. Beyond that the run stops with :class:`WorkerFailed`.

Ray is joined or started by :class:`hamrah.transport.ray_cluster.RaySession`: ``RAY_ADDRESS`` names a
running cluster (``ray start --head`` on one machine, ``ray start --address ...`` on the others),
else a local instance runs for the simulation. Every machine needs hamrah installed, and a user's
task module importable (installed, or shipped by a Ray ``runtime_env``).
"""

from __future__ import annotations

import logging

from torch import nn

from hamrah.algorithms.base import ClientUpdate
from hamrah.core.errors import WorkerFailed
from hamrah.data.federated import FederatedDataset
from hamrah.simulation.parallel import RoundTask, split_by_size, train_clients, worker_setup
from hamrah.task import Task
from hamrah.transport.ray_cluster import RaySession

log = logging.getLogger("hamrah.simulation")
RESTARTS = 3  # times Ray restarts a dead actor and retries its share


class ClientWorker:
    """A Ray actor's state: its own copy of the model and the data, one torch thread.

    ``refs`` holds the object-store references of the model, the data and the task, fetched here: the
    pool keeps them alive, so an actor that Ray restarts builds itself again from the same objects.
    """

    def __init__(self, refs: list) -> None:
        import ray

        self.model, self.data, self.fl_task = worker_setup(*ray.get(refs))

    def train(self, task: RoundTask) -> list[ClientUpdate]:
        return train_clients(self.model, self.data, task, self.fl_task)


class RayPool:
    """``workers`` Ray actors (at most one per CPU of the cluster) that train a round's clients.

    Raises:
        ConfigError: the ``ray`` extra is not installed.
    """

    def __init__(self, model: nn.Module, data: FederatedDataset, workers: int, fl_task: Task | None = None):
        self._session = RaySession("run.backend")
        ray = self._session.ray
        cpus = int(ray.cluster_resources().get("CPU", 1))
        if workers > cpus:
            log.warning("the Ray cluster has %d CPUs: %d workers train, not %d", cpus, cpus, workers)
        self.workers = max(1, min(workers, cpus))
        remote = ray.remote(num_cpus=1, max_restarts=RESTARTS, max_task_retries=RESTARTS)(ClientWorker)
        self._refs = [ray.put(model), ray.put(data), ray.put(fl_task)]  # alive while the actors may restart
        self._actors = [remote.options(scheduling_strategy="SPREAD").remote(self._refs) for _ in range(self.workers)]

    def train(self, task: RoundTask, sizes: list[int]) -> dict[int, ClientUpdate]:
        """Train ``task``'s clients across the actors; return each client's update by id.

        Raises:
            WorkerFailed: an actor died more than ``RESTARTS`` times.
            Exception: what the client half raised on an actor (a user's task code), as raised there.
        """
        from ray.exceptions import RayActorError, RayTaskError

        groups = split_by_size(list(task.ids), list(sizes), self.workers)
        refs = [actor.train.remote(task.subset(g)) for actor, g in zip(self._actors, groups)]
        out: dict[int, ClientUpdate] = {}
        try:
            for group, updates in zip(groups, self._session.ray.get(refs)):
                out.update(zip(group, updates))
        except RayActorError as e:
            self.close()
            raise WorkerFailed(
                f"run.backend = 'ray': a worker died {RESTARTS + 1} times ({type(e).__name__}: its process was "
                "killed, ran out of memory, or its machine left the cluster); expected workers that stay up, "
                "or run.backend = 'local'"
            ) from None
        except RayTaskError as e:  # the client half raised on an actor: raise it here as it was raised there
            self.close()
            raise (e.cause if isinstance(e.cause, Exception) else e) from None
        return out

    def close(self) -> None:
        """Stop the actors; shut Ray down if this pool started it."""
        for actor in self._actors:
            self._session.ray.kill(actor, no_restart=True)
        self._actors, self._refs = [], []
        self._session.close()
