"""Ready-made task kinds: classification, binary (with AUC), regression, next-token prediction.

Each defines ``loss``, ``metrics`` and ``predict``; a user subclass writes ``model`` and ``data``.
Every metric carries its reduction, so it merges the same way over batches, clients and rounds:

==================  ==========================================================================
kind                metrics (reduction)
==================  ==========================================================================
classification      ``loss``, ``accuracy`` (example-weighted); ``top<k>`` with ``top_k`` set
binary              the above, ``auc`` (summed score histograms, :class:`ScoreHistogram`)
regression          ``loss`` = ``mse``, ``mae`` (example-weighted)
next-token          per non-padding token: ``loss``, ``accuracy``, ``top<k>``; ``perplexity``
                    (exp of the token-weighted mean loss, :class:`Perplexity`)
==================  ==========================================================================
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F

from hamrah.core.errors import ConfigError
from hamrah.core.metrics import Metric, Perplexity, ScoreHistogram, Weighted
from hamrah.data.federated import Dataset
from hamrah.task.base import Task
from hamrah.task.losses import PAD_LABEL, masked_mean_loss


class ClassificationTask(Task):
    """Class labels (int64, ``PAD_LABEL`` = no target); the model outputs logits ``[..., C]``.

    The loss is mean cross-entropy over the non-padding targets: the built-in loss, so the simulator's
    fast batched trainers apply to models that support them.

    Attributes:
        top_k: also report ``top<k>`` accuracy (None: not).
    """

    top_k: ClassVar[int | None] = None

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return masked_mean_loss(output.unsqueeze(0), target.unsqueeze(0))[0]

    def metrics(self, output: torch.Tensor, target: torch.Tensor) -> dict[str, Metric]:
        valid = target != PAD_LABEL
        count = int(valid.sum())
        loss_sum = float(
            F.cross_entropy(output.flatten(0, -2), target.flatten(), ignore_index=PAD_LABEL, reduction="sum")
        )
        correct = int(((output.argmax(-1) == target) & valid).sum())
        out: dict[str, Metric] = {"loss": Weighted(loss_sum, count), "accuracy": Weighted(correct, count)}
        if self.top_k is not None:
            k = min(self.top_k, output.shape[-1])
            hit = (output.topk(k, -1).indices == target.unsqueeze(-1)).any(-1) & valid
            out[f"top{self.top_k}"] = Weighted(int(hit.sum()), count)
        return out

    def predict(self, output: torch.Tensor) -> dict[str, torch.Tensor]:
        """Return the predicted class and every class's probability (``[B, classes]``)."""
        return {"prediction": output.argmax(-1), "probability": torch.softmax(output.float(), -1)}


class BinaryTask(ClassificationTask):
    """Two classes (labels 0 / 1); the model outputs two logits. Adds ``auc`` over ``bins`` score bins."""

    bins: ClassVar[int] = 1000

    def metrics(self, output: torch.Tensor, target: torch.Tensor) -> dict[str, Metric]:
        out = super().metrics(output, target)
        valid = target != PAD_LABEL
        score = torch.softmax(output.detach().float(), -1)[..., 1]
        out["auc"] = ScoreHistogram.of(score[valid].numpy(), (target[valid] == 1).numpy(), self.bins)
        return out

    def predict(self, output: torch.Tensor) -> dict[str, torch.Tensor]:
        """Return the predicted class and the probability of class 1."""
        return {"prediction": output.argmax(-1), "score": torch.softmax(output.float(), -1)[..., 1]}


class RegressionTask(Task):
    """Real-valued targets (float32 ``[B]``); the model outputs ``[B]`` or ``[B, 1]``. Loss: mean squared error."""

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(output.reshape(target.shape), target.to(output.dtype))

    def metrics(self, output: torch.Tensor, target: torch.Tensor) -> dict[str, Metric]:
        err = output.reshape(target.shape) - target.to(output.dtype)
        n = err.numel()
        mse = Weighted(float(err.pow(2).sum()), n)
        return {"loss": mse, "mse": mse, "mae": Weighted(float(err.abs().sum()), n)}

    def predict(self, output: torch.Tensor) -> dict[str, torch.Tensor]:
        """Return the predicted value."""
        return {"prediction": output.reshape(len(output))}


class NextTokenTask(ClassificationTask):
    """Sequences: inputs are token ids ``[B, T]``, targets the next token at every position (``PAD_LABEL``
    past the end); the model outputs ``[B, T, V]``. Adds ``perplexity`` from the summed token loss."""

    def metrics(self, output: torch.Tensor, target: torch.Tensor) -> dict[str, Metric]:
        out = super().metrics(output, target)
        loss = out["loss"]
        out["perplexity"] = Perplexity(loss.total, loss.weight)  # type: ignore[union-attr]
        return out


def check_label_range(task: ClassificationTask, width: int, dataset: Dataset) -> None:
    """Raise when a class label of ``dataset`` has no output among the model's ``width`` scores (a 2
    under a BinaryTask), so that it stops before training, named, instead of as an index error in round 1
    or at the first evaluation.

    Raises:
        ConfigError: a training or test label below 0 or at least ``width`` (padding aside).
    """
    for split, data in (("training", dataset.train), ("test", dataset.test)):
        y = data.y if dataset.ignore_index is None else data.y.masked_fill(data.y == dataset.ignore_index, PAD_LABEL)
        labels = y[y != PAD_LABEL]
        if not len(labels):
            continue
        low, high = int(labels.min()), int(labels.max())
        if low < 0 or high >= width:
            kind = "; a BinaryTask takes labels 0 and 1" if isinstance(task, BinaryTask) else ""
            raise ConfigError(
                f"task {task.task_name}: a {split} label is {high if high >= width else low}, but the model "
                f"outputs {width} scores per example (labels 0 to {width - 1}){kind}"
            )
