"""SecureBoost: gradient-boosted trees over vertically split features, one function per role.

Cheng et al. 2021, *SecureBoost: A Lossless Federated Learning Framework* (IEEE Intelligent
Systems); the trees are XGBoost's (Chen & Guestrin 2016), grown depth-wise on quantile bins.

Roles: :func:`guest` (the label holder, who also holds the Paillier secret key) and :func:`host`
(one per feature holder). Both tables must hold the same ids in the same order (run PSI first).

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
from dataclasses import dataclass

import numpy as np

from hamrah.core.errors import DataError, ProtocolError
from hamrah.data.vertical import PartyTable
from hamrah.vertical import he
from hamrah.vertical.binning import QuantileBins, fit_bins
from hamrah.vertical.channel import Channel
from hamrah.vertical.psi import align
from hamrah.vertical.secureboost_core import (
    SecureBoostConfig,
    Split,
    base_score,
    best_split,
    bin_offsets,
    goes_left,
    gradients,
    histogram,
    leaf_weight,
    tree_draws,
)
from hamrah.vertical.secureboost_crypto import SparseLayout, decompress, packing_for
from hamrah.vertical.secureboost_host import host
from hamrah.vertical.secureboost_model import GUEST, LEAF, BoostCheckpoint, GuestModel, Tree

__all__ = ["BoostCheckpoint", "SecureBoostConfig", "guest", "host"]


@dataclass(frozen=True)
class _Peer:
    """What the guest knows of one host: its name, owner code and bin layout."""

    name: str
    code: int
    layout: SparseLayout


@dataclass(frozen=True)
class _Guest:
    """The guest's fixed state during training."""

    channel: Channel
    config: SecureBoostConfig
    bins: np.ndarray
    edges: QuantileBins
    offsets: np.ndarray
    peers: tuple[_Peer, ...]
    secret: he.SecretKey | None
    encryptor: he.KeyHolderEncryptor | None
    rng: np.random.Generator | None


class _TreeBuilder:
    """Grows one tree's node arrays (node ids in creation order)."""

    def __init__(self) -> None:
        names = ("owner", "feature", "threshold", "left", "right", "value", "missing_left")
        self.cols: dict[str, list] = {k: [] for k in names}
        self.add()

    def add(self) -> int:
        for k, v in zip(self.cols, (LEAF, 0, np.nan, -1, -1, 0.0, False)):
            self.cols[k].append(v)
        return len(self.cols["owner"]) - 1

    def split(self, node: int, owner: int, feature: int, threshold: float, missing_left: bool) -> tuple[int, int]:
        left, right = self.add(), self.add()
        values = (owner, feature, threshold, left, right, missing_left)
        for k, v in zip(("owner", "feature", "threshold", "left", "right", "missing_left"), values):
            self.cols[k][node] = v
        return left, right

    def freeze(self) -> Tree:
        dtypes = (np.int64, np.int64, np.float64, np.int64, np.int64, np.float64, bool)
        return Tree(*(np.array(self.cols[k], dtype=d) for k, d in zip(self.cols, dtypes)))


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
) -> tuple[tuple[_Peer, ...], int]:
    """Send the setup, read each host's bin layout and completed trees; agree on the tree to start from
    (the last one every party completed, 0 when any has none)."""
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
        if not (isinstance(trees, np.ndarray) and trees.dtype == np.int64 and trees.ndim == 1):
            raise ProtocolError(f"from {name!r}: 'trees' (the completed trees it holds) must be an int64 vector")
        common &= set(trees.tolist()) | {0}
        peers.append(_Peer(name, code, SparseLayout(nb.astype(np.int64), default.astype(np.int64))))
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
    peers, start = _handshake(channel, table, config, tuple(hosts), public, sorted(resume or ()))
    ctx = _Guest(
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
    k = int(labels.max()) + 1 if config.objective == "multi:softprob" else 1
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
            _send_gh(ctx, gc, hc, allowed[1:])
            grown.append(_grow(ctx, gc, hc, scales, allowed))
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


def _send_gh(ctx: _Guest, g: np.ndarray, h: np.ndarray, features: list[np.ndarray]) -> None:
    """Send the tree's (encrypted) gradients to every host, with the host's features the tree may use."""
    if ctx.secret is None:
        body = {"g": g, "h": h}
    else:
        packing = packing_for(ctx.config.precision_bits, len(g), ctx.config.key_bits)
        body = he.to_wire(ctx.encryptor.encrypt(packing.pack(g, h), ctx.rng))
    for peer, drawn in zip(ctx.peers, features):
        ctx.channel.send(peer.name, "sbt.tree", {"more": True, "features": drawn, **body})


def _plan(frontier: list[int], parent: dict[int, int], counts: np.ndarray) -> dict[str, np.ndarray]:
    """Return the level message: nodes, their parents and siblings, and which to build directly."""
    nodes = np.array(frontier, dtype=np.int64)
    par = np.array([parent.get(v, -1) for v in frontier], dtype=np.int64)
    sib = (
        np.array([v + 1 if v % 2 else v - 1 for v in frontier], dtype=np.int64)
        if frontier != [0]
        else np.array([-1], dtype=np.int64)
    )
    # the smaller child is built, its sibling derived (lower id on ties); the root is built
    direct = np.array(
        [s < 0 or counts[v] < counts[s] or (counts[v] == counts[s] and v < s) for v, s in zip(frontier, sib.tolist())],
        dtype=bool,
    )
    return {"nodes": nodes, "parent": par, "sibling": sib, "direct": direct}


def _grow(
    ctx: _Guest, g: np.ndarray, h: np.ndarray, scales: tuple[float, float], allowed: list[np.ndarray]
) -> tuple[Tree, np.ndarray]:
    """Grow one tree depth-wise with the hosts; return it and each row's leaf."""
    builder, pos = _TreeBuilder(), np.zeros(len(g), dtype=np.int64)
    frontier, parent, prev_hist = [0], {}, {}
    for _ in range(ctx.config.max_depth):
        size = int(max(frontier)) + 2
        counts = np.bincount(pos, minlength=size)
        totals = (np.bincount(pos, weights=g, minlength=size), np.bincount(pos, weights=h, minlength=size))
        plan = _plan(frontier, parent, counts)
        for peer in ctx.peers:
            ctx.channel.send(peer.name, "sbt.level", {"done": False, "pos": pos, **plan})
        hists = _guest_hists(ctx, plan, pos, g, h, prev_hist)
        host_hists = [_recv_hists(ctx, peer, plan, totals, drawn) for peer, drawn in zip(ctx.peers, allowed[1:])]
        nxt: list[int] = []
        chosen = {}
        for i, node in enumerate(frontier):
            total = (round(totals[0][node]), round(totals[1][node]))
            best = _choose(ctx, hists[node], [hh[i] for hh in host_hists], total, scales, allowed)
            if best is None:
                builder.cols["value"][node] = leaf_weight(total, ctx.config, scales)
            else:
                chosen[node] = best
        _apply_splits(ctx, builder, chosen, pos, parent, nxt)
        frontier, prev_hist = nxt, hists
        if not frontier:
            break
    _finish_leaves(ctx, builder, frontier, pos, (g, h), scales)
    return builder.freeze(), pos


def _finish_leaves(
    ctx: _Guest, builder: _TreeBuilder, frontier: list[int], pos: np.ndarray, gh: tuple, scales: tuple[float, float]
) -> None:
    for node in frontier:
        rows = pos == node
        total = (int(gh[0][rows].sum()), int(gh[1][rows].sum()))
        builder.cols["value"][node] = leaf_weight(total, ctx.config, scales)
    for peer in ctx.peers:
        ctx.channel.send(peer.name, "sbt.level", {"done": True})


def _guest_hists(
    ctx: _Guest, plan: dict, pos: np.ndarray, g: np.ndarray, h: np.ndarray, prev: dict
) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    out = {}
    for node, direct in zip(plan["nodes"].tolist(), plan["direct"].tolist()):
        if direct:
            out[node] = histogram(ctx.bins, ctx.offsets, np.flatnonzero(pos == node), g, h)
    for node, par, sib, direct in zip(*(plan[k].tolist() for k in ("nodes", "parent", "sibling", "direct"))):
        if not direct:
            out[node] = (prev[par][0] - out[sib][0], prev[par][1] - out[sib][1])
    return out


def _recv_hists(ctx: _Guest, peer: _Peer, plan: dict, totals, drawn: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Receive one host's histograms of this level (its ``drawn`` features only); return full flat
    (G, H) per node, zero for the features the tree may not use."""
    msg = ctx.channel.recv(peer.name, "sbt.hist")
    layout = peer.layout.restrict(drawn)
    k, size = len(plan["nodes"]), layout.size
    if ctx.secret is None:
        sent_g, sent_h = msg.get("g"), msg.get("h")
        for arr in (sent_g, sent_h):
            if not isinstance(arr, np.ndarray) or arr.dtype != np.int64 or arr.shape != (k, size):
                raise ProtocolError(f"from {peer.name!r}: histograms must be int64 arrays of shape ({k}, {size})")
    else:
        packing = packing_for(ctx.config.precision_bits, len(ctx.bins), ctx.config.key_bits)
        vector = he.from_wire(ctx.secret.public, msg, -(-k * size // packing.per_ciphertext), "histograms")
        sent_g, sent_h = (a.reshape(k, size) for a in decompress(ctx.secret, vector, packing, k * size))
    offsets = bin_offsets(peer.layout.num_bins)
    where = np.concatenate([np.arange(offsets[f], offsets[f + 1]) for f in np.flatnonzero(drawn)] or [[]]).astype(int)
    out = []
    for i, node in enumerate(plan["nodes"].tolist()):
        full = [np.zeros(int(offsets[-1]), np.int64), np.zeros(int(offsets[-1]), np.int64)]
        for a, sent, total in zip(full, (sent_g[i], sent_h[i]), totals):
            a[where] = layout.fill(sent, round(total[node]))
        out.append((full[0], full[1]))
    return out


def _choose(
    ctx: _Guest,
    own: tuple[np.ndarray, np.ndarray],
    others: list[tuple[np.ndarray, np.ndarray]],
    total: tuple[int, int],
    scales: tuple[float, float],
    allowed: list[np.ndarray],
) -> tuple[int, Split] | None:
    """Return ``(owner code, split)`` of the best split over all parties (guest first on ties)."""
    best = None
    candidates = [(GUEST, own, ctx.offsets)] + [
        (p.code, hh, bin_offsets(p.layout.num_bins)) for p, hh in zip(ctx.peers, others)
    ]
    for (code, (hg, hh), offsets), mask in zip(candidates, allowed):
        split = best_split(hg, hh, offsets, total, ctx.config, scales, None if mask.all() else mask)
        if split is not None and (best is None or split.gain > best[1].gain):
            best = (code, split)
    return best


def _apply_splits(
    ctx: _Guest,
    builder: _TreeBuilder,
    chosen: dict[int, tuple[int, Split]],
    pos: np.ndarray,
    parent: dict[int, int],
    nxt: list[int],
) -> None:
    """Split the chosen nodes: the guest's locally, each host's through that host; update ``pos``."""
    left = np.zeros(len(pos), dtype=bool)
    records: dict[int, int] = {}
    for peer in ctx.peers:
        mine = [(node, s) for node, (code, s) in chosen.items() if code == peer.code]
        ctx.channel.send(
            peer.name,
            "sbt.split",
            {
                "nodes": np.array([n for n, _ in mine], dtype=np.int64),
                "feature": np.array([s.feature for _, s in mine], dtype=np.int64),
                "bin": np.array([s.bin for _, s in mine], dtype=np.int64),
                "missing_left": np.array([s.missing_left for _, s in mine], dtype=bool),
            },
        )
    for peer in ctx.peers:
        mine = [node for node, (code, _) in chosen.items() if code == peer.code]
        msg = ctx.channel.recv(peer.name, "sbt.partition")
        got, recs = msg.get("left"), msg.get("records")
        if not (
            isinstance(got, np.ndarray)
            and got.dtype == bool
            and got.shape == pos.shape
            and isinstance(recs, np.ndarray)
            and recs.dtype == np.int64
            and recs.shape == (len(mine),)
            and (recs >= 0).all()
            and len(set(recs.tolist())) == len(mine)
        ):
            raise ProtocolError(
                f"from {peer.name!r}: expected 'left' (bool, one per row) and 'records' "
                f"(distinct non-negative int64, one per split node)"
            )
        in_nodes = np.isin(pos, mine)
        left[in_nodes] = got[in_nodes]
        records.update(zip(mine, recs.tolist()))
    for node, (code, s) in sorted(chosen.items()):
        rows = pos == node
        if code == GUEST:
            left[rows] = goes_left(ctx.bins[rows, s.feature], s.bin, ctx.offsets, s.feature, s.missing_left)
            children = builder.split(node, GUEST, s.feature, ctx.edges.threshold(s.feature, s.bin), s.missing_left)
        else:
            children = builder.split(node, code, records[node], np.nan, False)
        pos[rows] = np.where(left[rows], children[0], children[1])
        parent.update({children[0]: node, children[1]: node})
        nxt.extend(children)
