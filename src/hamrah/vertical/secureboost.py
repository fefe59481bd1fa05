"""SecureBoost: gradient-boosted trees over vertically split features, one function per role.

Cheng et al. 2021, *SecureBoost: A Lossless Federated Learning Framework* (IEEE Intelligent
Systems); the trees are XGBoost's (Chen & Guestrin 2016), grown depth-wise on quantile bins.

Roles: :func:`guest` (the label holder, who also holds the Paillier secret key) and :func:`host`
(one per feature holder). The parties first keep the ids all of them hold, by PSI (``config.psi``;
else the tables must hold the same ids in the same order). The guest's tree growing is in
:mod:`hamrah.vertical.secureboost_grow`.

Per tree, the guest computes log-loss gradients and hessians in fixed point, packs each row's pair
into one plaintext, encrypts it and sends the ciphertexts to every host. Per level, the guest tells
each host which rows sit in which node and which node of each sibling pair to build (the smaller;
the other is the parent minus it). Hosts answer with encrypted, compressed histograms of their
binned features; the guest decrypts them, finds the best split over its own (plaintext) and every
host's features, and for a host's split sends that host ``(feature, bin)``; the host records the
threshold under a record id and returns which rows go left.

Who sees what (encrypted mode):

- guest: its own data, the secret key, every histogram sum (G, H per bin of every host feature per
  node), which host bin splits each host node, and the left/right partition of every node; never a
  host's feature values or thresholds.
- host: ciphertexts of g and h only (never a gradient or label in the clear), the sample ids, which
  rows sit in each node of each tree (SecureBoost's "instance space"), and its own splits; not the
  guest's features, splits or leaf values.

``config.encrypted = False`` runs the same protocol in the clear (hosts then see g and h): the same
fixed-point sums, hence the same trees; for tests and as the speed baseline.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

import numpy as np

from hamrah.core.errors import DataError, ProtocolError
from hamrah.data.vertical import PartyTable
from hamrah.vertical import he
from hamrah.vertical.binning import fit_bins
from hamrah.vertical.channel import Channel
from hamrah.vertical.message import completed
from hamrah.vertical.psi import align
from hamrah.vertical.secureboost_core import (
    SecureBoostConfig,
    base_score,
    bin_offsets,
    gradients,
    tree_draws,
)
from hamrah.vertical.secureboost_crypto import SparseLayout
from hamrah.vertical.secureboost_grow import GuestState, Peer, grow, send_gh
from hamrah.vertical.secureboost_host import host
from hamrah.vertical.secureboost_model import BoostCheckpoint, GuestModel

__all__ = ["BoostCheckpoint", "SecureBoostConfig", "guest", "host"]


def _labels(table: PartyTable, objective: str) -> np.ndarray:
    if objective == "binary:logistic" and (table.labels is None or not np.isin(table.labels, (0.0, 1.0)).all()):
        raise DataError("guest: expected 0/1 labels (binary log-loss)")
    if objective == "multi:softprob" and (
        table.labels is None
        or not np.all((table.labels >= 0) & (table.labels == np.round(table.labels)) & (table.labels < 256))
        or table.labels.max() < 1
    ):
        raise DataError("guest: expected class labels 0..K-1 (at least two classes, at most 256) for multi:softprob")
    if table.labels is None or not np.all(np.isfinite(table.labels)):
        raise DataError(f"guest: expected finite labels ({objective})")
    if len(table.ids) < 2:
        raise DataError(f"guest: expected at least 2 rows, got {len(table.ids)}")
    return table.labels


def _handshake(
    channel: Channel,
    table: PartyTable,
    config: SecureBoostConfig,
    hosts: tuple[str, ...],
    public: he.PublicKey | None,
    done: list[int],
    classes: int,
) -> tuple[tuple[Peer, ...], int]:
    """Send the setup, read each host's bin layout and completed trees (at most ``num_trees`` rounds of
    ``classes`` trees); agree on the tree to start from (the last one every party completed, 0 when any
    has none)."""
    setup = {
        "ids": table.ids,
        "encrypted": config.encrypted,
        "max_bins": config.max_bins,
        "precision_bits": config.precision_bits,
        **(he.public_to_wire(public) if public else {}),
    }
    for name in hosts:
        channel.send(name, "sbt.setup", setup)
    peers, common = [], set(done) | {0}
    for code, name in enumerate(hosts, start=1):
        msg = channel.recv(name, "sbt.schema")
        nb, default, trees = msg.get("num_bins"), msg.get("default"), msg.get("trees")
        if not (
            isinstance(nb, np.ndarray)
            and isinstance(default, np.ndarray)
            and nb.ndim == 1
            and nb.shape == default.shape
            and np.issubdtype(nb.dtype, np.integer)
            and np.issubdtype(default.dtype, np.integer)
            and (nb >= 1).all()
            and (nb <= config.max_bins + 1).all()
            and (default >= 0).all()
            and (default < nb).all()
        ):
            raise ProtocolError(
                f"from {name!r}: 'num_bins' and 'default' must be equal-length int arrays "
                f"with 1 <= num_bins <= {config.max_bins + 1} and 0 <= default < num_bins"
            )
        common &= completed(trees, f"sbt.schema from {name!r}: 'trees'", config.num_trees * classes) | {0}
        peers.append(Peer(name, code, SparseLayout(nb.astype(np.int64), default.astype(np.int64))))
    start = max(common)
    for name in hosts:
        channel.send(name, "sbt.start", {"start": start})
    return tuple(peers), start


def guest(
    channel: Channel,
    table: PartyTable,
    config: SecureBoostConfig,
    hosts: tuple[str, ...] | None = None,
    rng: np.random.Generator | None = None,
    resume: Mapping[int, BoostCheckpoint] | None = None,
    on_epoch: Callable[[BoostCheckpoint], None] | None = None,
) -> GuestModel:
    """Train SecureBoost as the label holder; return the guest's half of the model.

    Args:
        channel: this party's channel.
        table: the guest's rows with labels; with ``config.psi`` the parties keep the ids all of them
            hold, else every table must hold the same ids in the same order.
        config: hyperparameters and the mode.
        hosts: the hosts' party names (``None``: every peer of ``channel``).
        rng: ``None`` for the OS CSPRNG (keys, encryption); a Generator only for reproducible tests.
        resume: this party's checkpoints by completed trees; training goes on after the last tree
            every party completed (the trees are deterministic, so the model is the uninterrupted one).
        on_epoch: called after each tree with this party's checkpoint.

    Raises:
        DataError: labels the objective cannot take, an infinite feature, or no shared ids.
        ProtocolError: a host's message broke the protocol.
    """
    hosts = tuple(channel.peers) if hosts is None else tuple(hosts)
    for name in hosts:
        channel.send(name, "sbt.align", {"psi": config.psi})
    if config.psi:
        table = align(channel, table, channel.name, (channel.name, *hosts), "secureboost")
    labels = _labels(table, config.objective)
    edges = fit_bins(table.features, config.max_bins)
    public, secret = he.keygen(config.key_bits, rng) if config.encrypted else (None, None)
    k = int(labels.max()) + 1 if config.objective == "multi:softprob" else 1
    peers, start = _handshake(channel, table, config, tuple(hosts), public, sorted(resume or ()), k)
    ctx = GuestState(
        channel,
        config,
        edges.transform(table.features),
        edges,
        bin_offsets(edges.num_bins),
        peers,
        secret,
        he.KeyHolderEncryptor(secret) if secret else None,
        rng,
    )
    base = base_score(labels, config.objective)
    model = GuestModel(base, (), tuple(hosts), table.features.shape[1], config.objective, k)
    margin = np.full((len(labels), k) if k > 1 else len(labels), base)
    if start:
        margin, model = _resumed(resume[start], model, margin.shape)
    for _ in range(start // k, config.num_trees):  # boosting rounds: one tree per class in each
        g, h, scales = gradients(margin, labels, config)
        grown = []
        for c in range(k):
            gc, hc = (g[:, c].copy(), h[:, c].copy()) if k > 1 else (g, h)
            features = [table.features.shape[1], *(len(p.layout.num_bins) for p in peers)]
            drawn, allowed = tree_draws(config, len(model.trees) + c, len(labels), features)
            gc[~drawn], hc[~drawn] = 0, 0  # rows left out of this tree: encryptions of zero to the hosts
            send_gh(ctx, gc, hc, allowed[1:])
            grown.append(grow(ctx, gc, hc, scales, allowed))
        for c, (tree, leaf_of_row) in enumerate(grown):
            if k > 1:
                margin[:, c] += tree.value[leaf_of_row]
            else:
                margin += tree.value[leaf_of_row]
        model = dataclasses.replace(model, trees=model.trees + tuple(tree for tree, _ in grown))
        if on_epoch is not None:
            on_epoch(BoostCheckpoint(len(model.trees), model, margin.copy()))
    for peer in peers:
        channel.send(peer.name, "sbt.tree", {"more": False})
    return model


def _resumed(state: BoostCheckpoint, fresh: GuestModel, shape: tuple) -> tuple[np.ndarray, GuestModel]:
    """Return the margin and model of a guest checkpoint, refusing one from other data, hosts or objective."""
    model = state.model
    if (
        not isinstance(model, GuestModel)
        or state.margin is None
        or state.margin.shape != shape
        or dataclasses.replace(model, trees=()) != fresh
        or len(model.trees) != state.epoch
    ):
        raise DataError(
            f"secureboost: the checkpoint after tree {state.epoch} is not this guest's (other rows, labels, "
            "hosts or objective); delete the checkpoints to train afresh"
        )
    return np.array(state.margin, dtype=np.float64), model
