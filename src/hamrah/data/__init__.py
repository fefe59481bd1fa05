"""Real data sets and the partitioners that split them across clients."""

from __future__ import annotations

import os

from hamrah.core.errors import ConfigError, DataError
from hamrah.core.seeds import partition_rng
from hamrah.data import partition
from hamrah.data.examples import Examples, dataset_examples, to_dataset
from hamrah.data.federated import ArrayData, ClientSlice, Dataset, FederatedDataset
from hamrah.data.loaders import SourceSpec, load_examples
from hamrah.data.locate import candidate_dirs
from hamrah.data.mnist import load_mnist
from hamrah.data.partition import PartitionSpec, split_examples
from hamrah.data.schema import Field, Schema
from hamrah.data.shakespeare import split_into_plays
from hamrah.data.vertical import PartyTable, load_vertical, read_party_csv


def load_dataset(name: str, path: str | os.PathLike | None = None) -> Dataset:
    """Load a data set by name: ``mnist``, ``shakespeare``, ``femnist`` (the bundled LEAF sample),
    ``cifar10`` (a JPEG copy) or ``synthetic_<alpha>_<beta>`` / ``synthetic_iid`` (FedProx's generator)."""
    if name == "mnist":
        return load_mnist(path)
    if name == "cifar10":
        from hamrah.data.cifar10 import load_cifar10

        return load_cifar10(path)
    if name.startswith("synthetic"):
        from hamrah.data.synthetic import parse_name, synthetic

        parsed = parse_name(name)
        if parsed is not None:
            return synthetic(parsed[0], parsed[1], iid=parsed[2])
    if name == "shakespeare":
        from hamrah.data.shakespeare import load_shakespeare

        return load_shakespeare(path)
    if name == "femnist":
        from hamrah.data.leaf import load_leaf

        for root in candidate_dirs("femnist/sample_a", path):
            if (root / "train").is_dir():
                return load_leaf(root, name="femnist")
        raise DataError(
            "FEMNIST (LEAF JSON) not found; looked in: " + ", ".join(map(str, candidate_dirs("femnist/sample_a", path)))
        )
    raise ConfigError(
        f"data.dataset = {name!r}: expected one of mnist, shakespeare, femnist, cifar10, "
        "synthetic_<alpha>_<beta> (e.g. synthetic_1_1), synthetic_iid"
    )


def federate(
    dataset: Dataset,
    scheme: str,
    num_clients: int | None,
    seed: int,
    *,
    shards_per_client: int = 2,
    alpha: float = 0.5,
    sigma: float = 1.0,
) -> FederatedDataset:
    """Split ``dataset``'s training examples across clients with partitioner ``scheme``."""
    rng = partition_rng(seed)
    n = len(dataset.train)
    labels = dataset.train.y.numpy()
    if scheme in ("shards", "dirichlet") and labels.ndim != 1:
        raise ConfigError(f"data.partition = {scheme!r} needs one label per example; {dataset.name} has sequences")
    spec = partition.PartitionSpec(scheme, num_clients, shards_per_client, alpha, sigma)
    parts = partition.split(spec, rng, num_examples=n, labels=labels, groups=dataset.train_groups)
    return FederatedDataset(dataset, parts, scheme)


def describe(fed: FederatedDataset) -> dict:
    """Return the partition's summary statistics (examples and labels per client)."""
    labels = fed.dataset.train.y.numpy()
    return partition.partition_stats(fed.client_indices, labels if labels.ndim == 1 else None)


__all__ = [
    "ArrayData",
    "ClientSlice",
    "Dataset",
    "Examples",
    "FederatedDataset",
    "Field",
    "PartitionSpec",
    "PartyTable",
    "Schema",
    "SourceSpec",
    "dataset_examples",
    "describe",
    "federate",
    "load_dataset",
    "load_examples",
    "load_mnist",
    "load_vertical",
    "read_party_csv",
    "split_examples",
    "split_into_plays",
    "to_dataset",
]
