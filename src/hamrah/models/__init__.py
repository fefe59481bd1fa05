"""Reference models and the factory that builds them by name."""

from __future__ import annotations

import math

from torch import nn

from hamrah.core.errors import ConfigError
from hamrah.data.federated import Dataset
from hamrah.models.zoo import CNN, CharLSTM, LogReg, TwoNN

MODELS = ("2nn", "cnn", "char_lstm", "logreg")


def build_model(name: str, dataset: Dataset) -> nn.Module:
    """Build model ``name`` shaped for ``dataset``'s inputs and classes.

    Example:
        >>> from hamrah.data import load_dataset
        >>> build_model("2nn", load_dataset("mnist"))  # doctest: +SKIP
    """
    x = dataset.train.x
    if name == "char_lstm":
        if x.dtype.is_floating_point:
            raise ConfigError(f"model.name = 'char_lstm' needs a character data set, not {dataset.name!r}")
        return CharLSTM(vocab_size=dataset.num_classes)
    if not x.dtype.is_floating_point:
        raise ConfigError(f"model.name = {name!r} needs an image or feature data set, not {dataset.name!r}")
    features = math.prod(x.shape[1:])
    if name == "2nn":
        return TwoNN(features, num_classes=dataset.num_classes)
    if name == "logreg":
        return LogReg(features, dataset.num_classes)
    if name == "cnn":
        if x.dim() != 4 or x.shape[2] != x.shape[3]:
            raise ConfigError(f"model.name = 'cnn' needs square images [N, C, H, W], got shape {tuple(x.shape)}")
        return CNN(x.shape[1], dataset.num_classes, x.shape[2])
    raise ConfigError(f"model.name = {name!r}: expected one of {', '.join(MODELS)}")


__all__ = ["CNN", "CharLSTM", "LogReg", "MODELS", "TwoNN", "build_model"]
