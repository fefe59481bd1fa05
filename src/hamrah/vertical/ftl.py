"""Federated transfer learning (FTL) between a label holder and a party with other samples and features.

Liu, Kang, Xing, Chen, Yang 2020, *A Secure Federated Transfer Learning Framework*, IEEE Intelligent
Systems 35(4). The guest (source domain) holds labelled rows; the host (target domain) holds rows of
other features and no labels; only a small overlap of ids (found by PSI) is shared. Each party trains
a representation network; on the overlap the guest's labels and an alignment term pull the two
representations together (:mod:`hamrah.vertical.ftl_math`), so that the host's rows outside the
overlap can be scored ``phi_j = Phi . u^B_j`` with ``Phi`` from the guest's labelled rows.

``mode = "plain"`` exchanges the terms in the clear; ``mode = "paillier"`` runs the paper's protocol
with Paillier keys at both parties and masks (:mod:`hamrah.vertical.ftl_crypto`); both compute the same
gradients up to fixed-point rounding. Roles: :func:`guest` and :func:`host`; the host's rows are scored
at the end of the session, so only the host learns its scores. Who sees what: ``docs/splitnn_ftl.md``.
The config, the trained halves and the networks both parties build are in :mod:`hamrah.vertical.ftl_core`
(re-exported here).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch

from hamrah.core.errors import DataError, ProtocolError
from hamrah.data.vertical import PartyTable
from hamrah.vertical import ftl_math as fm
from hamrah.vertical import he
from hamrah.vertical.channel import Channel
from hamrah.vertical.ftl_core import (
    FTLConfig,
    FTLParty,
    GuestResult,
    HostResult,
    TransferSplit,
    network_size,
    overlap_batches,
    representation_network,
    transfer_split,
)
from hamrah.vertical.ftl_crypto import PaillierLink, PlainLink
from hamrah.vertical.message import completed
from hamrah.vertical.nets import (
    NetCheckpoint,
    RowIndex,
    Standardizer,
    one_torch_thread,
    restore,
    snapshot,
)
from hamrah.vertical.psi import PSIConfig, intersect
from hamrah.vertical.saved import need

MAX_FEATURES = 1 << 20  # a party's features as it announces them (its network's input width)
MAX_ROWS = 1 << 24  # rows a host may ask the guest to score where nothing agreed bounds them (score_guest)


def _count(msg: dict, key: str, most: int, what: str, why: str = "") -> int:
    """Return ``msg[key]``, refused unless an integer in ``0..most`` (``why``: what bounds it)."""
    value = msg.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= most:
        raise ProtocolError(f"{what}: {key} = {value!r}, expected an integer in 0..{most}{why and f' ({why})'}")
    return value


def _network(config: FTLConfig, extra: int, loss: str = "") -> Callable[[int], tuple[int, str]]:
    """The ``out_len`` a training peer may announce: its network's parameters (``extra``: + its loss)."""
    return lambda features: (
        network_size(config, features) + extra,
        f"the parameters of its network over the {features} features it announced, hidden {config.hidden}, "
        f"dim {config.dim}{loss}",
    )


def _scoring(features: int) -> tuple[int, str]:
    return 0, "scoring: this party decrypts only the host's scores"


def _setup(
    channel: Channel, peer: str, config: FTLConfig, sizes: tuple[int, int], extra: dict, peer_out: Callable
) -> tuple[object, dict]:
    """Exchange config, sizes (``features``: the input width of this party's network; ``out_len``: the
    values the peer decrypts for it per step), public keys and the epochs each party holds checkpoints
    of (``extra["done"]``); return the link and the peer's setup message, with ``start``: the last epoch
    both completed (0: none), the same at both parties. ``peer_out(features)`` gives the ``out_len``
    the protocol allows the peer, and why: the peer's is refused unless exactly that."""
    secret = None
    fields = {"config": config.digest(), "features": sizes[0], "out_len": sizes[1], **extra}
    if config.mode == "paillier":
        public, secret = he.keygen(config.key_bits)
        fields.update(he.public_to_wire(public))
    channel.send(peer, "ftl/setup", fields)
    msg = channel.recv(peer, "ftl/setup")
    if msg.get("config") != config.digest():
        raise ProtocolError(
            f"ftl/setup from {peer!r}: the config differs from this party's (expected {config.digest()})"
        )
    expected, why = peer_out(_count(msg, "features", MAX_FEATURES, f"ftl/setup from {peer!r}"))
    if isinstance(msg.get("out_len"), bool) or msg.get("out_len") != expected:
        raise ProtocolError(f"ftl/setup from {peer!r}: out_len = {msg.get('out_len')!r}, expected {expected} ({why})")
    theirs = completed(msg.get("done"), f"ftl/setup from {peer!r}: 'done'", config.epochs)
    msg["start"] = max((set(extra["done"].tolist()) | {0}) & (theirs | {0}))
    if config.mode == "plain":
        return PlainLink(channel, peer), msg
    peer_public = he.public_from_wire(msg, min_bits=config.key_bits)
    return PaillierLink(channel, peer, secret, peer_public, config.precision_bits), msg


@one_torch_thread
def guest(
    channel: Channel,
    table: PartyTable,
    overlap: np.ndarray,
    config: FTLConfig,
    peer: str = "host",
    on_epoch: Callable[[NetCheckpoint], None] | None = None,
    resume: Mapping[int, NetCheckpoint] | None = None,
    host_rows: int | None = None,
) -> GuestResult:
    """Run the label holder: train on the overlap with the host, then help score the host's rows.

    Args:
        channel: this party's channel.
        table: the guest's rows with 0/1 labels (overlap and guest-only).
        overlap: the shared ids (from PSI), all in ``table``.
        config: the agreed config.
        peer: the host's name.
        on_epoch: called after each epoch with this party's checkpoint (its mean loss too).
        resume: this party's checkpoints by completed epoch; training goes on after the last epoch
            both parties completed, to the model an uninterrupted run trains.
        host_rows: the ids the host holds, as PSI told this party (what :func:`party_guest` passes):
            the host must announce as many rows at setup and may ask for at most that many scores
            (``None``: it may ask for as many as it announces).

    Returns:
        The guest's network, ``Phi`` and the loss per epoch.

    Raises:
        DataError: no 0/1 labels, or an overlap id missing from ``table``.
        ProtocolError: the host's config, sizes, keys or messages are wrong.
    """
    if table.labels is None or not np.all((table.labels == 0) | (table.labels == 1)):
        raise DataError("ftl guest: expected a table with 0/1 labels")
    overlap = np.asarray(overlap, dtype=np.int64)
    index = RowIndex(table.ids)
    index.rows(overlap, "ftl guest: overlap ids")
    scaler = Standardizer.fit(table.features)
    model = FTLParty(table.feature_names, scaler, representation_network(config, channel.name, table.features.shape[1]))
    done = np.array(sorted(resume or ()), dtype=np.int64)
    sizes = (table.features.shape[1], fm.num_params(model.network) + 1)
    link, msg = _setup(channel, peer, config, sizes, {"overlap": overlap, "done": done}, _network(config, 0))
    peer_len, start = msg["out_len"], msg["start"]
    rows = _count(msg, "rows", MAX_ROWS if host_rows is None else host_rows, f"ftl/setup from {peer!r}")
    if host_rows is not None and rows != host_rows:
        raise ProtocolError(f"ftl/setup from {peer!r}: rows = {rows}, expected {host_rows} (the ids it held in PSI)")
    x_all, y_all = scaler(table.features), torch.from_numpy(2 * table.labels.astype(np.float32) - 1)
    opt = torch.optim.Adam(model.network.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    history: list[float] = []
    if start:
        restore(resume[start].arrays, {"network": model.network}, opt)
        history = need(resume[start].arrays, "history", "FTL guest checkpoint").tolist()
    step = 0
    for epoch in range(start, config.epochs):
        total = 0.0
        for ids in overlap_batches(config, overlap, epoch):
            channel.send(peer, "ftl/batch", {"step": step, "mode": "train", "ids": ids})
            total += _guest_step(
                link, step, (model.network, opt), (x_all, y_all, index.rows(ids, "ftl guest: batch")), config, peer_len
            )
            step += 1
        history.append(total / len(overlap))
        channel.send(peer, "ftl/batch", {"step": step, "mode": "epoch", "ids": np.zeros(0, np.int64)})
        step += 1
        if on_epoch is not None:
            state = snapshot({"network": model.network}, opt, history=np.array(history))
            on_epoch(NetCheckpoint(epoch + 1, state, config.epochs, history[-1]))
    channel.send(peer, "ftl/batch", {"step": step, "mode": "score", "ids": np.zeros(0, np.int64)})
    with torch.no_grad():
        phi = fm.phi_of(fm.represent(model.network, x_all), y_all).double().numpy()
    count = _count(_score(channel, peer, step), "count", rows, f"ftl/score from {peer!r}", "the rows it announced")
    theirs = link.swap(step, phi, 0)
    link.apply(step, np.zeros((0, 0)), np.zeros(0), theirs, count)
    return GuestResult(model, phi, tuple(history))


def _guest_step(link, step: int, net_opt: tuple, data: tuple, config: FTLConfig, peer_len: int) -> float:
    """One training step of the guest: swap terms, learn its parameter gradient, update; return the batch loss."""
    (net, opt), (x_all, y_all, rows), d = net_opt, data, config.dim
    with torch.no_grad():
        phi = fm.phi_of(fm.represent(net, x_all), y_all).double().numpy()
        u_a = fm.represent(net, x_all[rows]).double().numpy()
    y = y_all[rows].double().numpy()
    theirs = link.swap(step, fm.guest_terms(y, phi, u_a), len(rows) * d + d * d + 1)
    jac = np.vstack([fm.phi_jacobian(net, x_all, y_all), fm.jacobian(net, x_all[rows])])
    m, c = fm.guest_map(y, phi, u_a, config.gamma)
    left = np.zeros((jac.shape[1] + 1, jac.shape[0] + 1))  # [J^T, 0; 0, 1]: the loss row passes through
    left[:-1, :-1], left[-1, -1] = jac.T, 1.0
    out = link.apply(step, m, c, theirs, peer_len, left=left)
    fm.apply_gradient(net, opt, out[:-1] / len(rows))
    return float(out[-1])


def _score(channel: Channel, peer: str, step: int) -> dict:
    msg = channel.recv(peer, "ftl/score")
    if msg.get("step") != step:
        raise ProtocolError(f"ftl/score from {peer!r}: expected step {step}, got {msg.get('step')!r}")
    return msg


@one_torch_thread
def host(
    channel: Channel,
    table: PartyTable,
    overlap: np.ndarray,
    config: FTLConfig,
    score_ids: Sequence[int] = (),
    peer: str = "guest",
    on_epoch: Callable[[NetCheckpoint], None] | None = None,
    resume: Mapping[int, NetCheckpoint] | None = None,
) -> HostResult:
    """Run the feature holder without labels: train on the overlap, then score ``score_ids``.

    The host answers only the agreed schedule: the batches :func:`overlap_batches` draws from
    ``overlap`` (this party's own PSI result, which the guest's must equal), each epoch's end, then
    scoring; a guest asking for other ids (a host-only row's representation) is refused.

    Args:
        channel: this party's channel.
        table: the host's rows (overlap and host-only).
        overlap: the shared ids (from PSI), all in ``table``.
        config: the agreed config.
        score_ids: the host's ids to score at the end (typically those outside the overlap).
        peer: the guest's name.
        on_epoch: called after each epoch with this party's checkpoint.
        resume: this party's checkpoints by completed epoch (see :func:`guest`).

    Returns:
        The host's network and the scores of ``score_ids`` (logits; only the host learns them).

    Raises:
        ProtocolError: the guest's config, overlap, batches, sizes, keys or messages are wrong.
    """
    index, score_ids = RowIndex(table.ids), np.asarray(score_ids, dtype=np.int64)
    overlap = np.asarray(overlap, dtype=np.int64)
    index.rows(overlap, "ftl host: overlap ids")
    score_rows = index.rows(score_ids, "ftl host: score ids")
    scaler = Standardizer.fit(table.features)
    model = FTLParty(table.feature_names, scaler, representation_network(config, channel.name, table.features.shape[1]))
    done = np.array(sorted(resume or ()), dtype=np.int64)
    sizes, extra = (table.features.shape[1], fm.num_params(model.network)), {"done": done, "rows": len(table.ids)}
    link, msg = _setup(channel, peer, config, sizes, extra, _network(config, 1, ", plus its loss"))
    theirs = msg.get("overlap")
    if not (isinstance(theirs, np.ndarray) and theirs.shape == overlap.shape and np.array_equal(theirs, overlap)):
        size = theirs.size if isinstance(theirs, np.ndarray) else theirs
        raise ProtocolError(
            f"ftl/setup from {peer!r}: its overlap ({size} ids) differs from this party's PSI result "
            f"({len(overlap)} ids); expected the same ids in the same order"
        )
    d, x_all, start = config.dim, scaler(table.features), msg["start"]
    opt = torch.optim.Adam(model.network.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    if start:
        restore(resume[start].arrays, {"network": model.network}, opt)
    step = 0
    for epoch in range(start, config.epochs):
        for ids in overlap_batches(config, overlap, epoch):
            _expect_batch(channel, peer, (step, "train", ids), overlap)
            rows = index.rows(ids, f"ftl/batch from {peer!r}")
            with torch.no_grad():
                u_b = fm.represent(model.network, x_all[rows]).double().numpy()
            theirs = link.swap(step, fm.host_terms(u_b), 2 * len(ids) * d + d * d)
            jac = fm.jacobian(model.network, x_all[rows])
            m, c = fm.host_map(u_b, config.gamma)
            out = link.apply(step, m, c, theirs, msg["out_len"], left=jac.T)
            fm.apply_gradient(model.network, opt, out / len(ids))
            step += 1
        _expect_batch(channel, peer, (step, "epoch", _NO_IDS), overlap)
        step += 1
        if on_epoch is not None:
            on_epoch(NetCheckpoint(epoch + 1, snapshot({"network": model.network}, opt)))
    _expect_batch(channel, peer, (step, "score", _NO_IDS), overlap)
    channel.send(peer, "ftl/score", {"step": step, "count": len(score_ids)})
    theirs = link.swap(step, np.zeros(0), d)
    with torch.no_grad():
        u_b = fm.represent(model.network, x_all[score_rows]).double().numpy()
    scores = link.apply(step, u_b, np.zeros(len(score_ids)), theirs, 0)
    return HostResult(model, scores)


_NO_IDS = np.zeros(0, np.int64)


def _expect_batch(channel: Channel, peer: str, expected: tuple[int, str, np.ndarray], overlap: np.ndarray) -> None:
    """Receive the guest's next ``ftl/batch`` and refuse it unless it is the agreed ``(step, mode, ids)``:
    a guest may ask only for the overlap's batches, in the seeded order both parties draw."""
    step, mode, ids = expected
    msg = channel.recv(peer, "ftl/batch")
    if msg.get("step") != step or msg.get("mode") != mode:
        raise ProtocolError(
            f"ftl/batch from {peer!r}: expected step {step}, mode {mode!r}; got {msg.get('step')!r}, "
            f"{msg.get('mode')!r} (a replayed, reordered or extra message)"
        )
    got = msg.get("ids")
    if not (isinstance(got, np.ndarray) and got.dtype == np.int64 and got.ndim == 1):
        raise ProtocolError(f"ftl/batch from {peer!r}: step {step}: expected a 1-D int64 array of ids")
    if not np.array_equal(got, ids):
        outside = int(np.sum(~np.isin(got, overlap)))
        raise ProtocolError(
            f"ftl/batch from {peer!r}: step {step} asks for {len(got)} ids, {outside} outside the overlap, "
            f"not the agreed batch; expected the {len(ids)} overlap ids the seeded order gives this step"
        )


@one_torch_thread
def score_guest(channel: Channel, phi: np.ndarray, config: FTLConfig, peer: str = "host") -> None:
    """Help the host score new rows of its own after training, with the trained ``Phi`` (the guest
    needs no rows; in ``paillier`` mode it sees only masked values, and the host learns the scores).

    Raises:
        ProtocolError: the host's config, keys or messages are wrong.
    """
    link, _ = _setup(channel, peer, config, (0, 0), {"done": np.zeros(0, np.int64)}, _scoring)
    count = _count(_score(channel, peer, 0), "count", MAX_ROWS, f"ftl/score from {peer!r}", "nothing agreed bounds it")
    link.apply(0, np.zeros((0, 0)), np.zeros(0), link.swap(0, phi, 0), count)


@one_torch_thread
def score_host(
    channel: Channel, model: FTLParty, table: PartyTable, config: FTLConfig, peer: str = "guest"
) -> np.ndarray:
    """Score the host's rows ``table`` with its trained network and the guest's ``Phi``; only the host
    learns the scores (``phi_j = Phi . u^B_j``, as at the end of training).

    Raises:
        DataError: ``table`` has other features than the model.
        ProtocolError: the guest's config, keys or messages are wrong.
    """
    if table.feature_names != model.feature_names:
        raise DataError(
            f"ftl host: the table's features {list(table.feature_names)} differ from the model's "
            f"{list(model.feature_names)}"
        )
    x = model.standardizer(table.features)
    link, _ = _setup(channel, peer, config, (x.shape[1], 0), {"done": np.zeros(0, np.int64)}, _scoring)
    channel.send(peer, "ftl/score", {"step": 0, "count": len(table.ids)})
    theirs = link.swap(0, np.zeros(0), config.dim)
    with torch.no_grad():
        u_b = fm.represent(model.network, x).double().numpy()
    return link.apply(0, u_b, np.zeros(len(u_b)), theirs, 0)


def party_guest(
    channel: Channel,
    table: PartyTable,
    config: FTLConfig,
    on_epoch: Callable[[NetCheckpoint], None] | None = None,
    resume: Mapping[int, NetCheckpoint] | None = None,
) -> GuestResult:
    """The registry's guest role: find the overlap by PSI (this party leads), then run :func:`guest`."""
    peer, sizes = channel.peers[0], {}
    overlap = intersect(channel, table.ids, PSIConfig(leader=channel.name), sizes=sizes)
    return guest(channel, table, overlap, config, peer, on_epoch, resume, host_rows=sizes[peer])


def party_host(
    channel: Channel,
    table: PartyTable,
    config: FTLConfig,
    on_epoch: Callable[[NetCheckpoint], None] | None = None,
    resume: Mapping[int, NetCheckpoint] | None = None,
) -> HostResult:
    """The registry's host role: PSI with the guest, then :func:`host`, scoring every id outside the overlap."""
    peer = channel.peers[0]
    overlap = intersect(channel, table.ids, PSIConfig(leader=peer))
    return host(channel, table, overlap, config, np.setdiff1d(table.ids, overlap), peer, on_epoch, resume)


__all__ = [
    "FTLConfig",
    "FTLParty",
    "GuestResult",
    "HostResult",
    "NetCheckpoint",
    "TransferSplit",
    "guest",
    "host",
    "overlap_batches",
    "party_guest",
    "party_host",
    "representation_network",
    "score_guest",
    "score_host",
    "transfer_split",
]
