"""SecureBoost's host role: encrypted histograms of its binned features, its own split lookup table.

The protocol and who sees what are described in :mod:`hamrah.vertical.secureboost`. The host keeps
its feature values and thresholds; it sends only histogram ciphertexts (re-randomised, compressed)
and, for the splits the guest assigns it, which rows go left.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from hamrah.core.errors import DataError, ProtocolError
from hamrah.data.vertical import PartyTable
from hamrah.vertical import he
from hamrah.vertical.binning import QuantileBins, fit_bins
from hamrah.vertical.channel import Channel
from hamrah.vertical.psi import align
from hamrah.vertical.secureboost_core import SecureBoostConfig, bin_offsets, goes_left, histogram
from hamrah.vertical.secureboost_crypto import (
    GHPacking,
    SparseLayout,
    compress,
    encrypted_histogram,
    packing_for,
    sparse_layout,
    subtract,
)
from hamrah.vertical.secureboost_model import BoostCheckpoint, HostModel


@dataclass(frozen=True)
class _Host:
    """The host's fixed state during training."""

    channel: Channel
    guest: str
    bins: np.ndarray
    edges: QuantileBins
    layout: SparseLayout
    public: he.PublicKey | None
    packing: GHPacking | None
    precision_bits: int


def _int_field(msg: dict, name: str, low: int, high: int) -> int:
    v = msg.get(name)
    if isinstance(v, bool) or not isinstance(v, int) or not low <= v <= high:
        raise ProtocolError(f"from guest: {name!r} must be an integer in {low}..{high}, got {v!r}")
    return v


def _agree(msg: dict, config: SecureBoostConfig | None) -> None:
    if config is None:
        return
    for key in ("encrypted", "max_bins", "precision_bits"):
        if msg.get(key) != getattr(config, key):
            raise ProtocolError(
                f"from guest: {key} = {msg.get(key)!r}, but this host is set to {getattr(config, key)!r}"
            )
    if config.encrypted and msg["n"][0].bit_length() < config.key_bits:
        raise ProtocolError(f"from guest: a {msg['n'][0].bit_length()}-bit key, this host requires {config.key_bits}")


def _setup(
    channel: Channel, table: PartyTable, guest: str, config: SecureBoostConfig | None, done: list[int]
) -> tuple[_Host, int]:
    msg = channel.recv(guest, "sbt.setup")
    ids = msg.get("ids")
    if not isinstance(ids, np.ndarray) or ids.shape != table.ids.shape or not np.array_equal(ids, table.ids):
        raise DataError(
            f"host: the guest's {getattr(ids, 'size', '?')} ids differ from this host's "
            f"{len(table.ids)} ids (align both tables on the same ids, in the same order, e.g. with PSI)"
        )
    max_bins, precision = _int_field(msg, "max_bins", 2, 255), _int_field(msg, "precision_bits", 8, 32)
    if not isinstance(msg.get("encrypted"), bool):
        raise ProtocolError("from guest: 'encrypted' must be a boolean")
    public = he.public_from_wire(msg) if msg["encrypted"] else None
    _agree(msg, config)
    packing = packing_for(precision, len(ids), public.key_bits) if public else None
    edges = fit_bins(table.features, max_bins)
    bins = edges.transform(table.features)
    layout = sparse_layout(bins, edges.num_bins)
    trees = np.array(done, dtype=np.int64)
    channel.send(guest, "sbt.schema", {"num_bins": layout.num_bins, "default": layout.default, "trees": trees})
    start = channel.recv(guest, "sbt.start").get("start")
    if isinstance(start, bool) or not isinstance(start, int) or not (start == 0 or start in done):
        raise ProtocolError(f"from guest: 'start' = {start!r}, expected 0 or a tree this host completed {done}")
    return _Host(channel, guest, bins, edges, layout, public, packing, precision), start


def host(
    channel: Channel,
    table: PartyTable,
    config: SecureBoostConfig | None = None,
    guest: str = "guest",
    rng: np.random.Generator | None = None,
    resume: Mapping[int, BoostCheckpoint] | None = None,
    on_epoch: Callable[[BoostCheckpoint], None] | None = None,
) -> HostModel:
    """Take part in SecureBoost training as a feature holder; return this host's lookup table.

    Args:
        channel: this party's channel.
        table: the host's rows: aligned by PSI first when the guest announces ``psi`` (which must
            then equal ``config.psi``), else the guest's ids in the guest's order.
        config: this host's own settings, if it has any: the guest's announced mode, bins and
            precision must then match them (a host set to ``encrypted = true`` refuses a guest that
            asks for the plaintext mode). ``None`` accepts the guest's.
        guest: the guest's party name.
        rng: ``None`` for the OS CSPRNG (re-randomisation); a Generator only for reproducible tests.
        resume: this party's checkpoints by completed trees (the guest picks where to go on).
        on_epoch: called after each tree with this party's checkpoint (its lookup table so far).

    Raises:
        DataError: the guest's ids differ from this table's, or a feature holds an infinity (NaN is a
            missing value).
        ProtocolError: a guest message broke the protocol (wrong kind, shape, key or ciphertext count)
            or announced settings other than ``config``'s.
    """
    psi = channel.recv(guest, "sbt.align").get("psi")
    if not isinstance(psi, bool) or (config is not None and psi != config.psi):
        raise ProtocolError(
            f"from guest: psi = {psi!r}, but this host is set to {getattr(config, 'psi', 'a boolean')!r}"
        )
    if psi:
        table = align(channel, table, guest, None, "secureboost")
    ctx, tree = _setup(channel, table, guest, config, sorted(resume or ()))
    records: list[tuple[int, float, bool]] = []  # (feature, threshold, missing_left) per record id
    if tree:
        saved = resume[tree].model
        if not isinstance(saved, HostModel) or saved.num_features != table.features.shape[1]:
            raise DataError(
                f"secureboost: the checkpoint after tree {tree} is not this host's; delete it to train afresh"
            )
        records = list(zip(saved.features.tolist(), saved.thresholds.tolist(), saved.missing_left.tolist()))
    while True:
        msg = channel.recv(guest, "sbt.tree")
        if not isinstance(msg.get("more"), bool):
            raise ProtocolError("from guest: 'more' must be a boolean")
        if not msg["more"]:
            return _model(records, table.features.shape[1])
        _host_tree(ctx, _read_gh(ctx, msg), _read_drawn(ctx, msg), records, rng)
        tree += 1
        if on_epoch is not None:
            on_epoch(BoostCheckpoint(tree, _model(records, table.features.shape[1])))


def _model(records: list, num_features: int) -> HostModel:
    f, t, m = zip(*records) if records else ((), (), ())
    return HostModel(np.array(f, dtype=np.int64), np.array(t, dtype=np.float64), num_features, np.array(m, dtype=bool))


def _read_gh(ctx: _Host, msg: dict):
    rows = len(ctx.bins)
    if ctx.public is not None:
        return he.from_wire(ctx.public, msg, rows, "packed gradients").cts
    g, h = msg.get("g"), msg.get("h")
    top = 1 << ctx.precision_bits
    for name, arr in (("g", g), ("h", h)):
        if (
            not isinstance(arr, np.ndarray)
            or arr.dtype != np.int64
            or arr.shape != (rows,)
            or (arr.size and np.abs(arr).max() > top)
        ):
            raise ProtocolError(f"from guest: {name!r} must be {rows} int64 values within +-2^{ctx.precision_bits}")
    return g, h


def _read_drawn(ctx: _Host, msg: dict) -> np.ndarray:
    """The features this tree may split on (a boolean mask with at least one set)."""
    drawn, count = msg.get("features"), ctx.bins.shape[1]
    if not (
        isinstance(drawn, np.ndarray) and drawn.dtype == bool and drawn.shape == (count,) and drawn.any() | (count == 0)
    ):
        raise ProtocolError(f"from guest: 'features' must be {count} booleans, at least one of them true")
    return drawn


def _check_level(msg: dict, rows: int, prev: dict) -> None:
    pos, nodes, par, sib, direct = (msg.get(k) for k in ("pos", "nodes", "parent", "sibling", "direct"))
    if not (isinstance(pos, np.ndarray) and pos.dtype == np.int64 and pos.shape == (rows,)):
        raise ProtocolError(f"from guest: 'pos' must be {rows} int64 node ids")
    if not all(
        isinstance(a, np.ndarray) and a.dtype == np.int64 and a.shape == nodes.shape and a.ndim == 1
        for a in (nodes, par, sib)
    ) or not (isinstance(direct, np.ndarray) and direct.dtype == bool and direct.shape == nodes.shape):
        raise ProtocolError(
            "from guest: 'nodes', 'parent', 'sibling' (int64) and 'direct' (bool) must have one entry per node"
        )
    built = set(nodes[direct].tolist())
    for node, p, s, d in zip(nodes.tolist(), par.tolist(), sib.tolist(), direct.tolist()):
        if not d and (p not in prev or s not in built):
            raise ProtocolError(
                f"from guest: node {node} is derived from parent {p} and sibling {s}, which this host has not built"
            )


def _host_tree(ctx: _Host, gh, drawn: np.ndarray, records: list, rng) -> None:
    """Serve one tree: per level, histograms of the ``drawn`` features then splits, until the guest says done."""
    prev: dict = {}
    bins, layout = (ctx.bins, ctx.layout) if drawn.all() else (ctx.bins[:, drawn], ctx.layout.restrict(drawn))
    while True:
        msg = ctx.channel.recv(ctx.guest, "sbt.level")
        if msg.get("done") is True:
            return
        _check_level(msg, len(ctx.bins), prev)
        hists = _level_hists(ctx, gh, msg, prev, bins, layout)
        order = msg["nodes"].tolist()
        if ctx.public is None:
            ctx.channel.send(
                ctx.guest,
                "sbt.hist",
                {"g": np.stack([hists[v][0] for v in order]), "h": np.stack([hists[v][1] for v in order])},
            )
        else:
            flat = [c for v in order for c in hists[v]]
            ctx.channel.send(ctx.guest, "sbt.hist", he.to_wire(compress(ctx.public, flat, ctx.packing, rng)))
        _host_splits(ctx, msg["pos"], set(order), records)
        prev = hists


def _level_hists(ctx: _Host, gh, msg: dict, prev: dict, bins: np.ndarray, layout: SparseLayout) -> dict:
    """Build the smaller child of each pair, derive its sibling from the parent (histogram subtraction)."""
    pos, out = msg["pos"], {}
    kept = layout.kept_index()
    offsets = bin_offsets(layout.num_bins)
    for node, direct in zip(msg["nodes"].tolist(), msg["direct"].tolist()):
        if not direct:
            continue
        rows = np.flatnonzero(pos == node)
        if ctx.public is None:
            g, h = histogram(bins, offsets, rows, gh[0], gh[1])
            out[node] = (g[kept], h[kept])
        else:
            out[node] = encrypted_histogram(gh, ctx.public.nsq, bins, rows, layout)
    for node, par, sib, direct in zip(*(msg[k].tolist() for k in ("nodes", "parent", "sibling", "direct"))):
        if direct:
            continue
        if ctx.public is None:
            out[node] = (prev[par][0] - out[sib][0], prev[par][1] - out[sib][1])
        else:
            out[node] = subtract(prev[par], out[sib], ctx.public.nsq)
    return out


def _host_splits(ctx: _Host, pos: np.ndarray, level_nodes: set, records: list) -> None:
    """Apply the splits the guest assigned to this host; answer which rows go left and the record ids."""
    msg = ctx.channel.recv(ctx.guest, "sbt.split")
    nodes, feat, bins, missing = (msg.get(k) for k in ("nodes", "feature", "bin", "missing_left"))
    if not all(
        isinstance(a, np.ndarray) and a.dtype == np.int64 and a.ndim == 1 and a.shape == nodes.shape
        for a in (nodes, feat, bins)
    ) or not (isinstance(missing, np.ndarray) and missing.dtype == bool and missing.shape == nodes.shape):
        raise ProtocolError(
            "from guest: 'nodes', 'feature', 'bin' (int64) and 'missing_left' (bool) must be arrays of one length"
        )
    left = np.zeros(len(pos), dtype=bool)
    ids = []
    nb, offsets = ctx.layout.num_bins, bin_offsets(ctx.layout.num_bins)
    for node, f, b, m in zip(nodes.tolist(), feat.tolist(), bins.tolist(), missing.tolist()):
        if node not in level_nodes or not 0 <= f < len(nb) or not 0 <= b < nb[f] - 1:
            raise ProtocolError(
                f"from guest: split (node {node}, feature {f}, bin {b}) is not a split candidate of this level"
            )
        rows = pos == node
        left[rows] = goes_left(ctx.bins[rows, f], b, offsets, f, m)
        ids.append(len(records))
        records.append((f, ctx.edges.threshold(f, b), m))
    ctx.channel.send(ctx.guest, "sbt.partition", {"left": left, "records": np.array(ids, dtype=np.int64)})
