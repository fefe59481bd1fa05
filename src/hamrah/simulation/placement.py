"""Where a simulation's clients train: batched (a cohort of MLPs as one set of batched products), in
worker processes, or one after another in-process; refused with the reason where a setting cannot hold."""

from __future__ import annotations

import os

from torch import nn

from hamrah.algorithms.base import Algorithm
from hamrah.core.errors import ConfigError
from hamrah.core.params import Params
from hamrah.simulation.batched import mlp_layers, supports_batching
from hamrah.simulation.config import SimulationConfig
from hamrah.simulation.parallel import batch_pull
from hamrah.task import Task, uses_builtin_loss


def placement(
    model: nn.Module,
    algorithm: Algorithm,
    task: Task,
    config: SimulationConfig,
    cohort: int,
    params: Params,
    broadcast: Params,
) -> tuple[bool, int]:
    """Return ``(batched, workers)`` for ``config``'s ``batched`` and ``workers`` (None: decided here)
    to train a cohort of ``cohort`` clients from the global model ``params``.

    Batched by default where it is exact (an MLP, plain SGD or FedProx's pull, the built-in loss). Else,
    by default, one worker per core for a convolutional model of hamrah's own tasks (two single-threaded
    CNN steps side by side beat one two-threaded step, docs/benchmarks.md), and in-process for the rest:
    a logistic regression, an MLP or an LSTM trains as fast or faster on the process's threads than in
    workers, which also cost a second or two to start; and a user's task, whose module every worker
    would import again.

    Raises:
        ConfigError: ``batched = true`` where the batched trainer cannot run, or workers for a task
            defined in ``__main__``.
    """
    if config.batched and not supports_batching(model):
        raise ConfigError(f"run.batched = true: model {type(model).__name__} has no batched form")
    if config.batched and not uses_builtin_loss(task):
        raise ConfigError(
            f"run.batched = true: task {task.task_name} has its own loss; "
            "the batched trainer runs the built-in cross-entropy only"
        )
    plain = batch_pull(algorithm, params, broadcast) is not None
    if config.batched and not plain:
        raise ConfigError(
            f"run.batched = true: algorithm {algorithm.name} changes local SGD beyond a proximal term "
            "(control variates, momentum, Adam, DP-SGD); the batched trainer runs plain SGD and FedProx's pull only"
        )
    auto_batched = mlp_layers(model) is not None and plain and uses_builtin_loss(task)
    batched = auto_batched if config.batched is None else config.batched
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    builtin = type(task).__module__.startswith("hamrah.")  # hamrah's own tasks: the default loss, reference models
    auto_workers = min(cores, cohort) if builtin and not batched and _convolutional(model) else 1
    if config.backend == "ray":  # the user asked for the cluster: its CPUs (hamrah.simulation.ray_pool caps)
        return batched, min(config.workers or cohort, cohort)
    workers = auto_workers if config.workers is None else min(config.workers, cohort)
    if workers > 1 and type(task).__module__ == "__main__":
        raise ConfigError(
            f"run.workers = {config.workers}: task {task.task_name} is defined in the script being run "
            "(__main__), which every worker process would run again; move the task into a module "
            "or set run.workers = 1"
        )
    return batched, workers


def _convolutional(model: nn.Module) -> bool:
    return any(isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)) for m in model.modules())
