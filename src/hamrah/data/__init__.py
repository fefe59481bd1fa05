"""Real data sets and the partitioners that split them across clients."""

from __future__ import annotations

import os


from hamrah.core.errors import ConfigError, DataError
from hamrah.core.seeds import partition_rng
from hamrah.data import partition
from hamrah.data.federated import ArrayData, Dataset, FederatedDataset
from hamrah.data.locate import candidate_dirs
from hamrah.data.mnist import load_mnist


def load_dataset(name: str, path: str | os.PathLike | None = None) -> Dataset:
    """Load a data set by name: ``mnist``, ``shakespeare`` or ``femnist`` (the bundled LEAF sample)."""
    if name == "mnist":
        return load_mnist(path)
    if name == "shakespeare":
        from hamrah.data.shakespeare import load_shakespeare

        return load_shakespeare(path)
    if name == "femnist":
        from hamrah.data.leaf import load_leaf

        for root in candidate_dirs("femnist/sample_a", path):
            if (root / "train").is_dir():
                return load_leaf(root, name="femnist")
        raise DataError("FEMNIST (LEAF JSON) not found; looked in: " + ", ".join(map(str, candidate_dirs("femnist/sample_a", path))))
    raise ConfigError(f"data.dataset = {name!r}: expected one of mnist, shakespeare, femnist")


def federate(
    dataset: Dataset, scheme: str, num_clients: int | None, seed: int, *,
    shards_per_client: int = 2, alpha: float = 0.5, sigma: float = 1.0,
) -> FederatedDataset:
    """Split ``dataset``'s training examples across clients with partitioner ``scheme``."""
    rng = partition_rng(seed)
    n = len(dataset.train)
    labels = dataset.train.y.numpy()
    if scheme in ("shards", "dirichlet") and labels.ndim != 1:
        raise ConfigError(f"data.partition = {scheme!r} needs one label per example; {dataset.name} has sequences")
    if scheme == "iid":
        parts = partition.iid(n, num_clients, rng)
    elif scheme == "shards":
        parts = partition.shards(labels, num_clients, shards_per_client, rng)
    elif scheme == "dirichlet":
        parts = partition.dirichlet(labels, num_clients, alpha, rng)
    elif scheme == "unbalanced":
        parts = partition.unbalanced(n, num_clients, sigma, rng)
    elif scheme == "natural":
        if dataset.train_groups is None:
            raise ConfigError(f"data.partition = 'natural': {dataset.name} has no natural clients")
        parts = partition.natural(dataset.train_groups, num_clients or None, rng)
    else:
        raise ConfigError(f"data.partition = {scheme!r}: expected one of {', '.join(('iid', 'shards', 'dirichlet', 'natural', 'unbalanced'))}")
    return FederatedDataset(dataset, parts, scheme)


def describe(fed: FederatedDataset) -> dict:
    """Return the partition's summary statistics (examples and labels per client)."""
    labels = fed.dataset.train.y.numpy()
    return partition.partition_stats(fed.client_indices, labels if labels.ndim == 1 else None)


__all__ = ["ArrayData", "Dataset", "FederatedDataset", "describe", "federate", "load_dataset", "load_mnist"]
