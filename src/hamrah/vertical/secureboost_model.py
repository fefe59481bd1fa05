"""SecureBoost models and prediction across parties, without revealing the hosts' thresholds.

After training, the guest holds every tree's shape, its own splits (feature and threshold) and all
leaf values; for a host's split it holds only ``(host, record id)``. Each host holds a lookup
table ``record id -> (feature, threshold)`` of its own splits (SecureBoost's "lookup table").

Prediction (:func:`predict_guest` / :func:`predict_host`): the guest sends the ids to score; each
host answers, for every one of its records, one bit per row ("goes left"), packed; the guest walks
the trees. The guest learns those bits (which side of each host split a row falls), never a host's
feature or threshold; a host learns which ids are scored and nothing about the trees' shape or
leaves.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from hamrah.core.errors import DataError, ProtocolError
from hamrah.data.vertical import PartyTable
from hamrah.vertical.channel import Channel
from hamrah.vertical.saved import need
from hamrah.vertical.secureboost_core import sigmoid, softmax

GUEST = 0  # owner code of the guest's own splits; host i (0-based) is i + 1; leaves are -1
LEAF = -1


@dataclass(frozen=True)
class Tree:
    """One tree, arrays indexed by node id (the root is 0).

    Attributes:
        owner: ``-1`` leaf, ``0`` the guest, ``i + 1`` the guest's ``i``-th host.
        feature: the guest's feature index, or the host's record id.
        threshold: the guest's threshold (rows with ``x <= threshold`` go left); NaN for hosts and leaves.
        left, right: child node ids (-1 at leaves).
        value: leaf values (already multiplied by the learning rate); 0 elsewhere.
        missing_left: at the guest's splits, whether a missing value (NaN) goes left.
    """

    owner: np.ndarray
    feature: np.ndarray
    threshold: np.ndarray
    left: np.ndarray
    right: np.ndarray
    value: np.ndarray
    missing_left: np.ndarray

    def splits(self) -> list[tuple[int, int, float]]:
        """Return ``(owner, feature or record, threshold)`` of each split node, in node order."""
        return [(int(o), int(f), float(t)) for o, f, t in zip(self.owner, self.feature, self.threshold) if o != LEAF]


@dataclass(frozen=True)
class GuestModel:
    """The guest's half of a SecureBoost model.

    Attributes:
        base_score: the initial margin (log-odds of the training labels' mean).
        trees: the trees, in boosting order.
        hosts: the host names, in the order their owner codes refer to.
        num_features: the guest's feature count (checked at prediction).
        objective: ``binary:logistic`` (predictions are probabilities), ``reg:squarederror`` or
            ``multi:softprob`` (tree ``i`` adds to class ``i % num_classes``; class probabilities).
        num_classes: ``K`` for softmax, else 1.
    """

    base_score: float
    trees: tuple[Tree, ...]
    hosts: tuple[str, ...]
    num_features: int
    objective: str = "binary:logistic"
    num_classes: int = 1


@dataclass(frozen=True)
class HostModel:
    """A host's half: its lookup table, indexed by record id.

    Attributes:
        features: the feature of each record.
        thresholds: the threshold of each record (rows with ``x <= threshold`` go left).
        num_features: the host's feature count (checked at prediction).
        missing_left: whether a missing value (NaN) goes left at each record.
    """

    features: np.ndarray
    thresholds: np.ndarray
    num_features: int
    missing_left: np.ndarray

    def decisions(self, x: np.ndarray) -> np.ndarray:
        """Return the ``records x rows`` boolean matrix "row goes left at this record"."""
        values = x[:, self.features].T
        return (self.thresholds[:, None] >= values) | (np.isnan(values) & self.missing_left[:, None])


@dataclass(frozen=True)
class BoostCheckpoint:
    """One party's SecureBoost state after ``epoch`` trees (what a checkpoint holds): its model so far
    and, at the guest, each training row's margin (its own rows: it stays with the guest)."""

    epoch: int
    model: GuestModel | HostModel
    margin: np.ndarray | None = None

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> BoostCheckpoint:
        """Rebuild a checkpoint from the arrays it was saved as (``model_arrays``).

        Raises:
            DataError: an array is missing.
        """
        epoch = int(need(arrays, "epoch", "SecureBoost checkpoint"))
        if "model.base_score" in arrays:
            return cls(epoch, guest_model(arrays, "model."), np.asarray(need(arrays, "margin", "guest checkpoint")))
        return cls(epoch, host_model(arrays, "model."))

    def progress(self) -> str:
        """Return a one-line report of this tree."""
        return f"tree {self.epoch} done"


def guest_model(arrays: Mapping[str, np.ndarray], prefix: str = "") -> GuestModel:
    """Rebuild the guest's model from its saved arrays (keys under ``prefix``)."""
    what = "SecureBoost guest model"
    count = len({k[len(prefix) :].split(".")[1] for k in arrays if k.startswith(f"{prefix}trees.")})
    fields = [f.name for f in dataclasses.fields(Tree)]
    trees = tuple(Tree(*(need(arrays, f"{prefix}trees.{i}.{f}", what) for f in fields)) for i in range(count))
    return GuestModel(
        float(need(arrays, f"{prefix}base_score", what)),
        trees,
        tuple(str(h) for h in need(arrays, f"{prefix}hosts", what).reshape(-1)),
        int(need(arrays, f"{prefix}num_features", what)),
        str(need(arrays, f"{prefix}objective", what)),
        int(need(arrays, f"{prefix}num_classes", what)),
    )


def host_model(arrays: Mapping[str, np.ndarray], prefix: str = "") -> HostModel:
    """Rebuild a host's lookup table from its saved arrays (keys under ``prefix``)."""
    what = "SecureBoost host model"
    return HostModel(
        need(arrays, f"{prefix}features", what).astype(np.int64).reshape(-1),
        need(arrays, f"{prefix}thresholds", what).astype(np.float64).reshape(-1),
        int(need(arrays, f"{prefix}num_features", what)),
        need(arrays, f"{prefix}missing_left", what).astype(bool).reshape(-1),
    )


def _check_width(table: PartyTable, expected: int, who: str) -> None:
    if table.features.shape[1] != expected:
        raise DataError(f"{who}: {table.features.shape[1]} features, the model was trained on {expected}")


def walk(tree: Tree, guest_x: np.ndarray, host_bits: list[np.ndarray]) -> np.ndarray:
    """Return each row's leaf value in ``tree``.

    Args:
        tree: the tree.
        guest_x: the guest's features of the rows.
        host_bits: per host, its ``records x rows`` "goes left" matrix.
    """
    rows = guest_x.shape[0]
    pos = np.zeros(rows, dtype=np.int64)
    for node in range(len(tree.owner)):  # children always have larger ids than their parent
        owner = int(tree.owner[node])
        if owner == LEAF:
            continue
        here = np.flatnonzero(pos == node)
        if owner == GUEST:
            v = guest_x[here, tree.feature[node]]
            left = (v <= tree.threshold[node]) | (np.isnan(v) & tree.missing_left[node])
        else:
            left = host_bits[owner - 1][tree.feature[node], here]
        pos[here] = np.where(left, tree.left[node], tree.right[node])
    return tree.value[pos]


def predict_guest(channel: Channel, model: GuestModel, table: PartyTable) -> np.ndarray:
    """Score ``table``'s rows with the hosts' help; return probabilities of class 1 (squared error: the
    predictions; softmax: ``rows x K`` class probabilities).

    Raises:
        DataError: ``table`` has a different feature count than in training.
        ProtocolError: a host's answer has the wrong shape.
    """
    _check_width(table, model.num_features, "guest")
    rows = len(table.ids)
    bits = []
    for host in model.hosts:
        channel.send(host, "sbt.predict", {"ids": table.ids})
    for i, host in enumerate(model.hosts):
        msg = channel.recv(host, "sbt.decisions")
        records = (
            max((int(t.feature[o]) for t in model.trees for o in np.flatnonzero(t.owner == i + 1)), default=-1) + 1
        )
        packed = msg.get("bits")
        if (
            not isinstance(packed, np.ndarray)
            or packed.dtype != np.uint8
            or packed.ndim != 2
            or packed.shape[0] < records
            or packed.shape[1] != (rows + 7) // 8
        ):
            raise ProtocolError(
                f"from {host!r}: 'bits' must be a uint8 array of shape (>= {records}, {(rows + 7) // 8})"
            )
        bits.append(np.unpackbits(packed, axis=1, count=rows).astype(bool))
    k = model.num_classes
    margin = np.full((rows, k), model.base_score)
    for i, tree in enumerate(model.trees):
        margin[:, i % k] += walk(tree, table.features, bits)
    if model.objective == "multi:softprob":
        return softmax(margin)
    return margin[:, 0] if model.objective == "reg:squarederror" else sigmoid(margin[:, 0])


def predict_host(channel: Channel, model: HostModel, table: PartyTable, guest: str = "guest") -> None:
    """Answer the guest's prediction request for ``table`` (rows aligned on the guest's ids).

    Raises:
        DataError: the guest's ids differ from this table's, or the feature count changed.
    """
    msg = channel.recv(guest, "sbt.predict")
    ids = msg.get("ids")
    if not isinstance(ids, np.ndarray) or not np.array_equal(ids, table.ids):
        raise DataError(
            "prediction: the guest's ids differ from this host's ids (align both tables on "
            "the same ids, in the same order, e.g. with PSI)"
        )
    _check_width(table, model.num_features, "host")
    channel.send(guest, "sbt.decisions", {"bits": np.packbits(model.decisions(table.features), axis=1)})
