"""The SecureBoost guest's half of growing a tree: per level, its own histograms and the hosts'
(decrypted), the best split over all parties, and each split applied (``hamrah.vertical.secureboost``
describes the protocol).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hamrah.core.errors import ProtocolError
from hamrah.vertical import he
from hamrah.vertical.binning import QuantileBins
from hamrah.vertical.channel import Channel
from hamrah.vertical.secureboost_core import (
    SecureBoostConfig,
    Split,
    best_split,
    bin_offsets,
    goes_left,
    histogram,
    leaf_weight,
)
from hamrah.vertical.secureboost_crypto import SparseLayout, decompress, packing_for
from hamrah.vertical.secureboost_model import GUEST, LEAF, Tree


@dataclass(frozen=True)
class Peer:
    """What the guest knows of one host: its name, owner code and bin layout."""

    name: str
    code: int
    layout: SparseLayout


@dataclass(frozen=True)
class GuestState:
    """The guest's fixed state during training."""

    channel: Channel
    config: SecureBoostConfig
    bins: np.ndarray
    edges: QuantileBins
    offsets: np.ndarray
    peers: tuple[Peer, ...]
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


def send_gh(ctx: GuestState, g: np.ndarray, h: np.ndarray, features: list[np.ndarray]) -> None:
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


def grow(
    ctx: GuestState, g: np.ndarray, h: np.ndarray, scales: tuple[float, float], allowed: list[np.ndarray]
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
    ctx: GuestState, builder: _TreeBuilder, frontier: list[int], pos: np.ndarray, gh: tuple, scales: tuple[float, float]
) -> None:
    for node in frontier:
        rows = pos == node
        total = (int(gh[0][rows].sum()), int(gh[1][rows].sum()))
        builder.cols["value"][node] = leaf_weight(total, ctx.config, scales)
    for peer in ctx.peers:
        ctx.channel.send(peer.name, "sbt.level", {"done": True})


def _guest_hists(
    ctx: GuestState, plan: dict, pos: np.ndarray, g: np.ndarray, h: np.ndarray, prev: dict
) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    out = {}
    for node, direct in zip(plan["nodes"].tolist(), plan["direct"].tolist()):
        if direct:
            out[node] = histogram(ctx.bins, ctx.offsets, np.flatnonzero(pos == node), g, h)
    for node, par, sib, direct in zip(*(plan[k].tolist() for k in ("nodes", "parent", "sibling", "direct"))):
        if not direct:
            out[node] = (prev[par][0] - out[sib][0], prev[par][1] - out[sib][1])
    return out


def _recv_hists(
    ctx: GuestState, peer: Peer, plan: dict, totals, drawn: np.ndarray
) -> list[tuple[np.ndarray, np.ndarray]]:
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
    ctx: GuestState,
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
    ctx: GuestState,
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


__all__ = ["GuestState", "Peer", "grow", "send_gh"]
