"""What every SplitNN party agrees on: the config, the trained halves, the networks and the batch order.

Shared by the guest (:mod:`hamrah.vertical.splitnn`), the hosts (:mod:`hamrah.vertical.splitnn_host`)
and the central baseline; the protocol itself is described in :mod:`hamrah.vertical.splitnn`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

from hamrah.core.errors import ConfigError
from hamrah.vertical.nets import Standardizer, check_positive, keyed_rng, mlp

WIRE_DTYPES = ("float32", "float16")


@dataclass(frozen=True)
class SplitNNConfig:
    """The architecture and training schedule all parties agree on (checked at setup).

    Attributes:
        bottom_hidden: hidden widths of every party's bottom network.
        cut_dim: width of each party's cut layer (the activations it sends).
        top_hidden: hidden widths of the guest's top network.
        epochs: passes over the training ids.
        batch_size: ids per mini-batch.
        lr: Adam learning rate (every party).
        weight_decay: L2 coefficient of Adam (every party).
        wire_dtype: ``float32`` or ``float16`` for activations and gradients on the wire.
        noise_std: standard deviation of Gaussian noise a host adds to the activations it sends.
        seed: root seed: initial weights (keyed by party name) and the batch order.
        psi: find the ids every party holds by PSI first and train on those (``False``: the guest
            sends its training ids, which every host must hold, in the clear).
    """

    bottom_hidden: tuple[int, ...] = (16,)
    cut_dim: int = 8
    top_hidden: tuple[int, ...] = (8,)
    epochs: int = 30
    batch_size: int = 64
    lr: float = 0.01
    weight_decay: float = 0.0
    wire_dtype: str = "float32"
    noise_std: float = 0.0
    seed: int = 0
    psi: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.psi, bool):
            raise ConfigError(f"psi: expected true or false, got {self.psi!r}")
        for name in ("bottom_hidden", "top_hidden"):
            widths = getattr(self, name)
            if not isinstance(widths, tuple):
                raise ConfigError(f"{name}: expected a tuple of positive integers, got {widths!r}")
            for w in widths:
                check_positive(name, w)
        for name in ("cut_dim", "epochs", "batch_size"):
            check_positive(name, getattr(self, name))
        check_positive("lr", self.lr, float)
        check_positive("weight_decay", self.weight_decay, float, allow_zero=True)
        check_positive("noise_std", self.noise_std, float, allow_zero=True)
        check_positive("seed", self.seed, allow_zero=True)
        if self.wire_dtype not in WIRE_DTYPES:
            raise ConfigError(f"wire_dtype: expected one of {list(WIRE_DTYPES)}, got {self.wire_dtype!r}")

    def digest(self) -> str:
        """Return the config as canonical JSON (compared by the parties at setup)."""
        return json.dumps(asdict(self), sort_keys=True)


@dataclass(frozen=True)
class BottomModel:
    """One party's trained half: its bottom network and its feature standardiser (never sent)."""

    party: str
    feature_names: tuple[str, ...]
    standardizer: Standardizer
    network: nn.Sequential


@dataclass(frozen=True)
class GuestModel:
    """The label holder's trained model: its bottom network, the top network and the hosts' order."""

    bottom: BottomModel
    top: nn.Sequential
    hosts: tuple[str, ...]


@dataclass(frozen=True)
class SplitNNResult:
    """What the guest's training returns.

    Attributes:
        model: the guest's half of the trained model.
        train_loss: mean training loss of each epoch.
        scores: predicted probabilities for ``eval_ids`` (empty when none were given).
    """

    model: GuestModel
    train_loss: tuple[float, ...]
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0))


def bottom_network(config: SplitNNConfig, party: str, in_dim: int) -> nn.Sequential:
    """Return ``party``'s initial bottom network (ReLU at the cut layer)."""
    return mlp(
        in_dim, config.bottom_hidden, config.cut_dim, keyed_rng(config.seed, "splitnn", party), out_activation=True
    )


def top_network(config: SplitNNConfig, num_parties: int) -> nn.Sequential:
    """Return the guest's initial top network over ``num_parties`` concatenated cut layers."""
    return mlp(config.cut_dim * num_parties, config.top_hidden, 1, keyed_rng(config.seed, "splitnn", "top"))


def batches(config: SplitNNConfig, num_rows: int, epoch: int) -> list[np.ndarray]:
    """Return the row positions of each mini-batch of ``epoch`` (a seeded shuffle)."""
    order = keyed_rng(config.seed, "splitnn-shuffle", epoch).permutation(num_rows)
    return [order[i : i + config.batch_size] for i in range(0, num_rows, config.batch_size)]


def adam(config: SplitNNConfig, *networks: nn.Module) -> torch.optim.Adam:
    """Return Adam over ``networks``' parameters with the config's learning rate and weight decay."""
    params = [p for net in networks for p in net.parameters()]
    return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)


__all__ = [
    "WIRE_DTYPES",
    "BottomModel",
    "GuestModel",
    "SplitNNConfig",
    "SplitNNResult",
    "adam",
    "batches",
    "bottom_network",
    "top_network",
]
