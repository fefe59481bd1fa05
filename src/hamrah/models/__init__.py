"""Reference models and the factory that builds them by name."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from hamrah.core.errors import ConfigError
from hamrah.data.federated import Dataset
from hamrah.models.zoo import CNN, CharLSTM, LogReg, TwoNN

MODELS = ("2nn", "cnn", "char_lstm", "logreg")


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to build a model without its data set: what an FL plan carries to a device.

    Attributes:
        name: one of ``MODELS``.
        input_shape: shape of one example (e.g. ``(1, 28, 28)``; ``(80,)`` for character sequences).
        num_classes: size of the output layer (the vocabulary for ``char_lstm``).
        tokens: inputs are integer tokens (characters), not floats.
        hidden: width of the 2NN's hidden layers (McMahan et al.: 200).
    """

    name: str
    input_shape: tuple[int, ...]
    num_classes: int
    tokens: bool = False
    hidden: int = 200

    @staticmethod
    def of(name: str, dataset: Dataset, hidden: int = 200) -> ModelSpec:
        """Return the spec of model ``name`` shaped for ``dataset``."""
        x = dataset.train.x
        return ModelSpec(name, tuple(x.shape[1:]), dataset.num_classes, not x.dtype.is_floating_point, hidden)

    def build(self) -> nn.Module:
        """Build the model.

        Raises:
            ConfigError: the model does not fit the inputs (e.g. a CNN on sequences).
        """
        name, shape = self.name, self.input_shape
        if name == "char_lstm":
            if not self.tokens:
                raise ConfigError("model.name = 'char_lstm' needs a character data set, not float features")
            return CharLSTM(vocab_size=self.num_classes)
        if self.tokens:
            raise ConfigError(f"model.name = {name!r} needs an image or feature data set, not character tokens")
        features = math.prod(shape)
        if name == "2nn":
            return TwoNN(features, hidden=self.hidden, num_classes=self.num_classes)
        if name == "logreg":
            return LogReg(features, self.num_classes)
        if name == "cnn":
            if len(shape) != 3 or shape[1] != shape[2]:
                raise ConfigError(f"model.name = 'cnn' needs square images [C, H, W], got example shape {shape}")
            return CNN(shape[0], self.num_classes, shape[1])
        raise ConfigError(f"model.name = {name!r}: expected one of {', '.join(MODELS)}")

    def example_dtype(self) -> torch.dtype:
        return torch.int64 if self.tokens else torch.float32


def build_model(name: str, dataset: Dataset) -> nn.Module:
    """Build model ``name`` shaped for ``dataset``'s inputs and classes.

    Example:
        >>> from hamrah.data import load_dataset
        >>> build_model("2nn", load_dataset("mnist"))  # doctest: +SKIP
    """
    try:
        return ModelSpec.of(name, dataset).build()
    except ConfigError as e:
        raise ConfigError(f"{e} (data set {dataset.name!r})") from None


__all__ = ["CNN", "MODELS", "CharLSTM", "LogReg", "ModelSpec", "TwoNN", "build_model"]
