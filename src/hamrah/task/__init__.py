"""The task contract user code implements, its ready-made kinds, and hamrah's reference models as tasks.

Example:
    >>> import hamrah
    >>> class Hospital(hamrah.BinaryTask):  # doctest: +SKIP
    ...     def model(self):
    ...         return nn.Sequential(nn.Linear(30, 16), nn.ReLU(), nn.Linear(16, 2))
    ...     def data(self):
    ...         return self.read_tables(["a.csv", "b.csv"], "test.csv", label="y")
"""

from __future__ import annotations

from hamrah.core.metrics import Perplexity, ScoreHistogram, Summed, Weighted, merge_metrics, metric_values
from hamrah.task.base import REQUIRED, Task, check_task, examples_dataset, task_dataset
from hamrah.task.builtin import builtin_task
from hamrah.task.entry import load_task
from hamrah.task.kinds import BinaryTask, ClassificationTask, NextTokenTask, RegressionTask
from hamrah.task.losses import PAD_LABEL, masked_mean_loss

DEFAULT_TASK = ClassificationTask()  # the loss and metrics of a trainer given no task (the built-in cross-entropy)


def uses_builtin_loss(task: Task) -> bool:
    """Return True when ``task``'s loss is the built-in cross-entropy (the batched and fused trainers apply)."""
    return type(task).loss is ClassificationTask.loss


__all__ = [
    "DEFAULT_TASK",
    "PAD_LABEL",
    "REQUIRED",
    "BinaryTask",
    "ClassificationTask",
    "NextTokenTask",
    "Perplexity",
    "RegressionTask",
    "ScoreHistogram",
    "Summed",
    "Task",
    "Weighted",
    "builtin_task",
    "check_task",
    "examples_dataset",
    "load_task",
    "masked_mean_loss",
    "merge_metrics",
    "metric_values",
    "task_dataset",
    "uses_builtin_loss",
]
