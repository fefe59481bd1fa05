"""Data set containers: a central data set, and its split across clients."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from hamrah.core.errors import ConfigError
from hamrah.core.seeds import Stream, stream_rng


@dataclass(frozen=True)
class ArrayData:
    """Examples as two aligned tensors: inputs ``x`` and targets ``y``.

    ``y`` is 1-D for classification, or ``[N, T]`` for sequence targets (padding = ``ignore_index``).
    """

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def take(self, ix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the inputs and targets of the examples at ``ix`` (indices of any shape)."""
        return self.x[ix], self.y[ix]


@dataclass(frozen=True)
class ClientSlice:
    """One client's examples as indices into the pooled training set, not a copy (what the batched
    trainer gathers its batches from in one step)."""

    base: ArrayData
    index: torch.Tensor  # long, the client's rows of ``base``

    def __len__(self) -> int:
        return int(self.index.shape[0])

    def take(self, ix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the inputs and targets of the client's examples at ``ix``."""
        return self.base.take(self.index[ix])


@dataclass(frozen=True)
class Dataset:
    """A data set as loaded, before it is split across clients.

    Attributes:
        name: short name, e.g. ``"mnist"``.
        train, test: the pooled training and test examples.
        num_classes: size of the output layer.
        train_groups: natural owner (writer, speaking role) of each training example, or None.
        group_names: name of each group id in ``train_groups``.
        ignore_index: target value that is padding, not a label (sequence data), or None.
    """

    name: str
    train: ArrayData
    test: ArrayData
    num_classes: int
    train_groups: np.ndarray | None = None
    group_names: tuple[str, ...] | None = None
    ignore_index: int | None = None
    info: dict = field(default_factory=dict)


def split_holdout(n: int, fraction: float, seed: int, client_key: int) -> tuple[np.ndarray, np.ndarray]:
    """Return (held out, kept) positions of a client's ``n`` examples: ``fraction`` of them (at least one,
    and at least one kept; none when ``n < 2``), drawn from the run's seed and the client's key, the same
    in every round and on every driver (the simulator's clients, a device's Example Store)."""
    if n < 2 or fraction <= 0:
        return np.zeros(0, dtype=np.int64), np.arange(n, dtype=np.int64)
    k = min(max(int(fraction * n), 1), n - 1)
    perm = stream_rng(seed, Stream.HOLDOUT, client_key).permutation(n)
    return np.sort(perm[:k]), np.sort(perm[k:])


@dataclass(frozen=True)
class FederatedDataset:
    """A data set split across clients: client ``k`` owns ``train[client_indices[k]]``, and with a
    holdout (:meth:`with_holdout`) also ``train[client_holdout[k]]``, its own examples kept out of
    training to score the models it would use (personalized federated learning)."""

    dataset: Dataset
    client_indices: tuple[np.ndarray, ...]
    partition: str
    client_holdout: tuple[np.ndarray, ...] | None = None

    def with_holdout(self, fraction: float, seed: int) -> FederatedDataset:
        """Return this split with ``fraction`` of every client's examples held out (:func:`split_holdout`).

        Raises:
            ConfigError: ``fraction`` not in (0, 1), or a holdout already taken.
        """
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction < 1:
            raise ConfigError(f"personalization.holdout = {fraction!r}: expected a number in (0, 1)")
        if self.client_holdout is not None:
            raise ConfigError("the clients' examples are already split into training and held-out ones")
        held, kept = [], []
        for c, ix in enumerate(self.client_indices):
            h, k = split_holdout(len(ix), fraction, seed, c)
            held.append(ix[h])
            kept.append(ix[k])
        return FederatedDataset(self.dataset, tuple(kept), self.partition, tuple(held))

    def holdout_data(self, client_id: int) -> ArrayData:
        """Return client ``client_id``'s held-out examples (empty without a holdout)."""
        ix = self.client_holdout[client_id] if self.client_holdout is not None else np.zeros(0, dtype=np.int64)
        return ArrayData(*self.dataset.train.take(torch.as_tensor(ix, dtype=torch.long)))

    @property
    def num_clients(self) -> int:
        return len(self.client_indices)

    def client_sizes(self) -> np.ndarray:
        """Return n_k, the number of training examples of each client."""
        return np.array([len(ix) for ix in self.client_indices], dtype=np.int64)

    def client_data(self, client_id: int) -> ArrayData:
        """Return client ``client_id``'s training examples."""
        return ArrayData(*self.client_slice(client_id).take(slice(None)))

    def client_slice(self, client_id: int) -> ClientSlice:
        """Return client ``client_id``'s training examples as indices into the pooled set (no copy)."""
        return ClientSlice(self.dataset.train, torch.as_tensor(self.client_indices[client_id], dtype=torch.long))
