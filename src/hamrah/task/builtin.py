"""hamrah's reference models as tasks: 2NN, CNN and logistic regression classify, CharLSTM predicts the
next character. Written on the same contract as a user's task; the data set comes from ``[data]``."""

from __future__ import annotations

from torch import nn

from hamrah.core.errors import ConfigError
from hamrah.data.federated import Dataset
from hamrah.models import MODELS, ModelSpec
from hamrah.task.base import Task
from hamrah.task.kinds import ClassificationTask, NextTokenTask


class _Reference:
    """The shared half of a reference task: a model by name, shaped for a loaded data set."""

    def __init__(self, model_name: str, dataset: Dataset):
        self.name = model_name
        self.dataset = dataset
        self.spec = ModelSpec.of(model_name, dataset)

    def model(self) -> nn.Module:
        try:
            return self.spec.build()
        except ConfigError as e:
            raise ConfigError(f"{e} (data set {self.dataset.name!r})") from None

    def data(self) -> Dataset:
        return self.dataset


class ReferenceClassifier(_Reference, ClassificationTask):
    """``2nn``, ``cnn`` or ``logreg`` on an image or feature data set."""


class ReferenceNextToken(_Reference, NextTokenTask):
    """``char_lstm`` on a character data set (Shakespeare)."""


def builtin_task(name: str, dataset: Dataset) -> Task:
    """Return the built-in task ``name`` (one of ``MODELS``) on ``dataset``.

    Raises:
        ConfigError: an unknown name, or a model that does not fit the data (checked by building it).
    """
    if name not in MODELS:
        raise ConfigError(f"task.name = {name!r}: expected one of {', '.join(MODELS)}")
    task = (ReferenceNextToken if name == "char_lstm" else ReferenceClassifier)(name, dataset)
    task.model()
    return task
