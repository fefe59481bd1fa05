"""Partitioners: split a data set's training examples across clients, deterministically under a seed.

Each returns a tuple of index arrays, one per client; :func:`partition_stats` summarises any split.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from hamrah.core.errors import ConfigError
from hamrah.core.seeds import partition_rng

if TYPE_CHECKING:
    from hamrah.data.examples import Examples

SCHEMES = ("iid", "shards", "dirichlet", "natural", "unbalanced")


@dataclass(frozen=True)
class PartitionSpec:
    """How to split a data set across clients.

    Attributes:
        scheme: one of :data:`SCHEMES`.
        num_clients: the number of clients (natural: a random subset of the groups; None or 0 = all).
        shards_per_client: shards: shards dealt to each client.
        alpha: dirichlet: the concentration (small = few classes per client).
        sigma: unbalanced: the log-normal spread of client sizes (0 = equal sizes).
    """

    scheme: str
    num_clients: int | None
    shards_per_client: int = 2
    alpha: float = 0.5
    sigma: float = 1.0


def split(
    spec: PartitionSpec,
    rng: np.random.Generator,
    *,
    num_examples: int,
    labels: np.ndarray | None = None,
    groups: np.ndarray | None = None,
) -> tuple[np.ndarray, ...]:
    """Split ``num_examples`` examples with ``spec``: the one entry point of every partitioner.

    Works on any labelled data set: ``labels`` may be integers, booleans, text or (shards only)
    real numbers; ``groups`` may be any ids of natural clients (files, users, hospitals).

    Args:
        spec: the scheme and its parameters.
        rng: the partition's random stream (``hamrah.core.seeds.partition_rng(seed)``).
        num_examples: how many examples there are.
        labels: one label per example (shards, dirichlet).
        groups: one natural-client id per example (natural).

    Returns:
        One sorted index array per client; no index is in two of them.

    Raises:
        ConfigError: an unknown scheme, impossible parameters, or missing labels/groups.
    """
    k = spec.num_clients
    if spec.scheme in ("shards", "dirichlet"):
        labels = _one_label_per_example(spec.scheme, labels, num_examples)
        if spec.scheme == "shards":
            return shards(labels, k, spec.shards_per_client, rng)
        if labels.dtype.kind in "fc":
            raise ConfigError(
                "data.partition = 'dirichlet' needs class labels (integers, booleans or text); "
                "this label holds real numbers: use shards (sorted by value), iid or unbalanced"
            )
        return dirichlet(labels, k, spec.alpha, rng)
    if spec.scheme == "iid":
        return iid(num_examples, k, rng)
    if spec.scheme == "unbalanced":
        return unbalanced(num_examples, k, spec.sigma, rng)
    if spec.scheme == "natural":
        if groups is None or len(groups) != num_examples:
            raise ConfigError(
                "data.partition = 'natural': this data set has no natural clients "
                "(load one file per client, or name a client-id column)"
            )
        return natural(np.asarray(groups), k or None, rng)
    raise ConfigError(f"data.partition = {spec.scheme!r}: expected one of {', '.join(SCHEMES)}")


def split_examples(examples: Examples, spec: PartitionSpec, seed: int) -> tuple[np.ndarray, ...]:
    """Split any labelled :class:`~hamrah.data.examples.Examples` across clients under ``seed``.

    The label field drives shards and dirichlet; the examples' groups (one file per client, a
    client-id column) drive natural. Client ``k`` owns ``examples.take(result[k])``.

    Example:
        >>> from hamrah.data.examples import Examples
        >>> from hamrah.data.schema import Field, Schema
        >>> ex = Examples.from_columns({"y": ["a", "b"] * 10},
        ...     Schema((Field("y", "int64", categories=("a", "b")),), label="y"))
        >>> [len(ix) for ix in split_examples(ex, PartitionSpec("iid", 4), seed=0)]
        [5, 5, 5, 5]
    """
    labels = examples.labels if examples.schema.label is not None else None
    return split(spec, partition_rng(seed), num_examples=len(examples), labels=labels, groups=examples.groups)


def _one_label_per_example(scheme: str, labels: np.ndarray | None, n: int) -> np.ndarray:
    if labels is None:
        raise ConfigError(f"data.partition = {scheme!r} needs labels; this data set has no label field")
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) != n:
        raise ConfigError(
            f"data.partition = {scheme!r} needs one label per example; this data set's labels "
            f"have shape {list(labels.shape)}"
        )
    return labels


def iid(num_examples: int, num_clients: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """Shuffle and deal the examples into ``num_clients`` equal shards (McMahan's IID split)."""
    _check_clients(num_clients, num_examples)
    return tuple(np.sort(s) for s in np.array_split(rng.permutation(num_examples), num_clients))


def shards(
    labels: np.ndarray, num_clients: int, shards_per_client: int, rng: np.random.Generator
) -> tuple[np.ndarray, ...]:
    """McMahan et al.'s pathological non-IID split: sort by label, cut equal shards, deal each client some.

    With 60,000 MNIST examples, 100 clients and 2 shards each: 200 shards of 300.
    """
    _check_clients(num_clients, len(labels))
    num_shards = num_clients * shards_per_client if _is_int(shards_per_client) else 0
    if not num_shards or shards_per_client < 1 or num_shards > len(labels):
        raise ConfigError(
            f"data.shards_per_client = {shards_per_client}: expected 1 <= shards_per_client <= "
            f"{len(labels) // num_clients} for {num_clients} clients and {len(labels)} examples"
        )
    order = np.argsort(labels, kind="stable")
    size = len(labels) // num_shards
    pieces = [order[i * size : (i + 1) * size] for i in range(num_shards)]
    assign = rng.permutation(num_shards).reshape(num_clients, shards_per_client)
    return tuple(np.sort(np.concatenate([pieces[s] for s in row])) for row in assign)


def dirichlet(
    labels: np.ndarray,
    num_clients: int,
    alpha: float,
    rng: np.random.Generator,
    min_examples: int = 10,
    max_tries: int = 100,
) -> tuple[np.ndarray, ...]:
    """Label skew: each class is split across clients in proportions drawn from Dirichlet(alpha).

    Small ``alpha`` gives few classes per client; redraws until every client holds ``min_examples``
    (at most half of ``n / num_clients``, so that small data sets can be split).
    """
    _check_clients(num_clients, len(labels))
    if not _is_number(alpha) or not 0 < alpha < np.inf:  # inf: Dirichlet's draws are NaN
        raise ConfigError(f"data.alpha = {alpha!r}: expected a positive finite number (e.g. 0.1 or 0.5)")
    # at most half a fair share: on a small data set, n // num_clients would demand a perfectly even split
    min_examples = min(min_examples, max(1, len(labels) // (2 * num_clients)))
    for _ in range(max_tries):
        owned: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
        for c in np.unique(labels):
            idx = rng.permutation(np.flatnonzero(labels == c))
            cuts = (np.cumsum(rng.dirichlet(np.full(num_clients, alpha))) * len(idx)).astype(int)[:-1]
            for k, part in enumerate(np.split(idx, cuts)):
                owned[k].append(part)
        result = tuple(np.sort(np.concatenate(p)) for p in owned)
        if min(len(r) for r in result) >= min_examples:
            return result
    raise ConfigError(
        f"data.alpha = {alpha}: could not give each of {num_clients} clients {min_examples} examples "
        f"in {max_tries} draws; use a larger alpha or fewer clients"
    )


def natural(groups: np.ndarray, num_clients: int | None, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """One client per natural group (writer, speaking role); ``num_clients`` picks a random subset."""
    if groups.ndim != 1:
        raise ConfigError(f"data.partition = 'natural' needs one group per example; got groups of shape {groups.shape}")
    ids = np.unique(groups)
    if num_clients is not None and (not _is_int(num_clients) or num_clients < 0):
        raise ConfigError(f"data.num_clients = {num_clients!r}: expected 0 or None (every natural client) or a count")
    if num_clients:
        if num_clients > len(ids):
            raise ConfigError(f"data.num_clients = {num_clients}: this data set has only {len(ids)} natural clients")
        ids = np.sort(rng.choice(ids, size=num_clients, replace=False))
    order = np.argsort(groups, kind="stable")
    bounds = np.searchsorted(groups[order], ids)
    ends = np.searchsorted(groups[order], ids, side="right")
    return tuple(np.sort(order[b:e]) for b, e in zip(bounds, ends))


def unbalanced(num_examples: int, num_clients: int, sigma: float, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """IID content with log-normal client sizes (``sigma`` = spread; 0 gives equal sizes)."""
    _check_clients(num_clients, num_examples)
    if not _is_number(sigma) or not 0 <= sigma <= 10:  # as the config allows; far above, exp() overflows to NaN sizes
        raise ConfigError(f"data.sigma = {sigma!r}: expected a number in [0, 10] (log-normal spread of sizes)")
    weights = rng.lognormal(0.0, sigma, size=num_clients)
    sizes = np.maximum(1, np.floor(weights / weights.sum() * (num_examples - num_clients)).astype(int) + 1)
    cuts = np.cumsum(sizes)[:-1]
    perm = rng.permutation(num_examples)[: sizes.sum()]
    return tuple(np.sort(s) for s in np.split(perm, cuts))


def partition_stats(client_indices: tuple[np.ndarray, ...], labels: np.ndarray | None) -> dict:
    """Summarise a split: examples per client and (for 1-D labels) distinct labels per client."""
    sizes = np.array([len(ix) for ix in client_indices])
    stats = {
        "num_clients": len(sizes),
        "examples_total": int(sizes.sum()),
        "examples_per_client": _describe(sizes),
    }
    if labels is not None and labels.ndim == 1:
        per_client = np.array([len(np.unique(labels[ix])) for ix in client_indices])
        stats["labels_per_client"] = _describe(per_client)
    return stats


def _describe(v: np.ndarray) -> dict:
    return {"mean": float(v.mean()), "std": float(v.std()), "min": int(v.min()), "max": int(v.max())}


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


def _check_clients(num_clients: int, num_examples: int) -> None:
    if not _is_int(num_clients) or not 1 <= num_clients <= num_examples:
        raise ConfigError(f"data.num_clients = {num_clients}: expected 1 <= num_clients <= {num_examples}")
