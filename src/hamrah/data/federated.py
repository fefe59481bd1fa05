"""Data set containers: a central data set, and its split across clients."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch


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


@dataclass(frozen=True)
class FederatedDataset:
    """A data set split across clients: client ``k`` owns ``train[client_indices[k]]``."""

    dataset: Dataset
    client_indices: tuple[np.ndarray, ...]
    partition: str

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
