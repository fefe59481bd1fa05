"""What both FTL parties agree on: the config, the data split of the experiments, the trained halves,
the networks and the batch order (the protocol is :mod:`hamrah.vertical.ftl`)."""

from __future__ import annotations

import itertools
import json
from dataclasses import asdict, dataclass

import numpy as np
from torch import nn

from hamrah.core.errors import ConfigError, DataError
from hamrah.data.vertical import PartyTable
from hamrah.vertical import he
from hamrah.vertical.nets import Standardizer, check_positive, keyed_rng, mlp

MODES = ("plain", "paillier")


@dataclass(frozen=True)
class FTLConfig:
    """What both parties agree on (compared at setup).

    Attributes:
        hidden: hidden widths of both representation networks.
        dim: width ``d`` of the representations.
        epochs: passes over the overlap.
        batch_size: overlap ids per step.
        lr: Adam learning rate.
        weight_decay: L2 coefficient (the paper's regulariser), applied by Adam.
        gamma: weight of the alignment term.
        mode: ``plain`` or ``paillier``.
        key_bits: Paillier modulus size (2048 for real use; 1024 in tests only).
        precision_bits: fixed-point bits of the encrypted terms.
        seed: root seed of the initial weights (keyed by party) and the batch order.
    """

    hidden: tuple[int, ...] = (16,)
    dim: int = 4
    epochs: int = 10
    batch_size: int = 32
    lr: float = 0.01
    weight_decay: float = 1e-4
    gamma: float = 0.1
    mode: str = "plain"
    key_bits: int = 2048
    precision_bits: int = 24
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.hidden, tuple):
            raise ConfigError(f"hidden: expected a tuple of positive integers, got {self.hidden!r}")
        for w in self.hidden:
            check_positive("hidden", w)
        for name in ("dim", "epochs", "batch_size"):
            check_positive(name, getattr(self, name))
        check_positive("lr", self.lr, float)
        check_positive("weight_decay", self.weight_decay, float, allow_zero=True)
        check_positive("gamma", self.gamma, float, allow_zero=True)
        check_positive("seed", self.seed, allow_zero=True)
        if self.mode not in MODES:
            raise ConfigError(f"mode: expected one of {list(MODES)}, got {self.mode!r}")
        he.check_key_bits(self.key_bits)
        if (
            isinstance(self.precision_bits, bool)
            or not isinstance(self.precision_bits, int)
            or not 8 <= self.precision_bits <= 28
        ):
            raise ConfigError(f"precision_bits: expected an integer in 8..28, got {self.precision_bits!r}")

    def digest(self) -> str:
        """Return the config as canonical JSON."""
        return json.dumps(asdict(self), sort_keys=True)


@dataclass(frozen=True)
class TransferSplit:
    """An FTL setting built from a vertical data set (the ids are split three ways, seeded).

    Attributes:
        guest: the guest's rows: overlap + guest-only, with labels.
        host: the host's rows: overlap + host-only, no labels.
        overlap: the shared ids.
        host_only: the host's other ids (to be scored).
        host_only_labels: their true labels, held out for evaluation (no party sees them).
    """

    guest: PartyTable
    host: PartyTable
    overlap: np.ndarray
    host_only: np.ndarray
    host_only_labels: np.ndarray


def transfer_split(tables: dict[str, PartyTable], overlap_fraction: float = 0.1, seed: int = 0) -> TransferSplit:
    """Return an FTL setting: ``overlap_fraction`` of the ids shared, the rest split in half between the parties.

    Raises:
        ConfigError: ``overlap_fraction`` is not in (0, 1).
        DataError: the tables are not a guest with labels and a host over the same ids.
    """
    if not isinstance(overlap_fraction, float) or not 0 < overlap_fraction < 1:
        raise ConfigError(f"overlap_fraction: expected a number in (0, 1), got {overlap_fraction!r}")
    g, h = tables["guest"], tables["host"]
    if g.labels is None or not np.array_equal(np.sort(g.ids), np.sort(h.ids)):
        raise DataError("transfer_split: expected a labelled guest table and a host table over the same ids")
    ids = keyed_rng(seed, "ftl-split").permutation(np.sort(g.ids))
    k = max(1, round(overlap_fraction * len(ids)))
    overlap, rest = np.sort(ids[:k]), ids[k:]
    guest_only, host_only = np.sort(rest[: len(rest) // 2]), np.sort(rest[len(rest) // 2 :])
    host_part = h.select(np.concatenate([overlap, host_only]))
    return TransferSplit(
        g.select(np.concatenate([overlap, guest_only])),
        PartyTable(host_part.ids, host_part.features, host_part.feature_names),
        overlap,
        host_only,
        g.select(host_only).labels,
    )


@dataclass(frozen=True)
class FTLParty:
    """One party's trained half: its standardiser and representation network (never sent)."""

    feature_names: tuple[str, ...]
    standardizer: Standardizer
    network: nn.Sequential


@dataclass(frozen=True)
class GuestResult:
    """The guest's model, ``Phi`` and the mean training loss of each epoch."""

    model: FTLParty
    phi: np.ndarray
    train_loss: tuple[float, ...]


@dataclass(frozen=True)
class HostResult:
    """The host's model and the scores ``phi_j`` of the ids it asked for (only the host learns them)."""

    model: FTLParty
    scores: np.ndarray


def representation_network(config: FTLConfig, party: str, in_dim: int) -> nn.Sequential:
    """Return ``party``'s initial representation network (seeded by party name)."""
    return mlp(in_dim, config.hidden, config.dim, keyed_rng(config.seed, "ftl", party))


def network_size(config: FTLConfig, features: int) -> int:
    """Return the parameter count of a representation network over ``features`` inputs (what
    :func:`representation_network` builds), without building it."""
    dims = [features, *config.hidden, config.dim]
    return sum(a * b + b for a, b in itertools.pairwise(dims))


def overlap_batches(config: FTLConfig, overlap: np.ndarray, epoch: int) -> list[np.ndarray]:
    """Return the overlap ids of each step of ``epoch`` (a seeded shuffle)."""
    order = keyed_rng(config.seed, "ftl-shuffle", epoch).permutation(len(overlap))
    return [overlap[order[i : i + config.batch_size]] for i in range(0, len(overlap), config.batch_size)]


__all__ = [
    "MODES",
    "FTLConfig",
    "FTLParty",
    "GuestResult",
    "HostResult",
    "TransferSplit",
    "network_size",
    "overlap_batches",
    "representation_network",
    "transfer_split",
]
