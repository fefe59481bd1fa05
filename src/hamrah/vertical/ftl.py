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
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from hamrah.core.errors import ConfigError, DataError, ProtocolError
from hamrah.data.vertical import PartyTable
from hamrah.vertical import ftl_math as fm
from hamrah.vertical import he
from hamrah.vertical.channel import Channel
from hamrah.vertical.ftl_crypto import PaillierLink, PlainLink
from hamrah.vertical.nets import (
    EpochDone,
    RowIndex,
    Standardizer,
    check_positive,
    keyed_rng,
    mlp,
    one_torch_thread,
)
from hamrah.vertical.psi import PSIConfig, intersect

MODES = ("plain", "paillier")


@dataclass(frozen=True)
class FTLConfig:
    """What both parties agree on (compared at setup).

    Attributes:
        hidden: hidden widths of both representation networks.
        dim: width ``d`` of the representations.
        epochs: passes over the overlap.
        batch_size: overlap ids per step.
        lr: Adam learning rate.
        weight_decay: L2 coefficient (the paper's regulariser), applied by Adam.
        gamma: weight of the alignment term.
        mode: ``plain`` or ``paillier``.
        key_bits: Paillier modulus size (2048 for real use; 1024 in tests only).
        precision_bits: fixed-point bits of the encrypted terms.
        seed: root seed of the initial weights (keyed by party) and the batch order.
    """

    hidden: tuple[int, ...] = (16,)
    dim: int = 4
    epochs: int = 10
    batch_size: int = 32
    lr: float = 0.01
    weight_decay: float = 1e-4
    gamma: float = 0.1
    mode: str = "plain"
    key_bits: int = 2048
    precision_bits: int = 24
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.hidden, tuple):
            raise ConfigError(f"hidden: expected a tuple of positive integers, got {self.hidden!r}")
        for w in self.hidden:
            check_positive("hidden", w)
        for name in ("dim", "epochs", "batch_size"):
            check_positive(name, getattr(self, name))
        check_positive("lr", self.lr, float)
        check_positive("weight_decay", self.weight_decay, float, allow_zero=True)
        check_positive("gamma", self.gamma, float, allow_zero=True)
        check_positive("seed", self.seed, allow_zero=True)
        if self.mode not in MODES:
            raise ConfigError(f"mode: expected one of {list(MODES)}, got {self.mode!r}")
        he.check_key_bits(self.key_bits)
        if (
            isinstance(self.precision_bits, bool)
            or not isinstance(self.precision_bits, int)
            or not 8 <= self.precision_bits <= 28
        ):
            raise ConfigError(f"precision_bits: expected an integer in 8..28, got {self.precision_bits!r}")

    def digest(self) -> str:
        """Return the config as canonical JSON."""
        return json.dumps(asdict(self), sort_keys=True)


@dataclass(frozen=True)
class TransferSplit:
    """An FTL setting built from a vertical data set (the ids are split three ways, seeded).

    Attributes:
        guest: the guest's rows: overlap + guest-only, with labels.
        host: the host's rows: overlap + host-only, no labels.
        overlap: the shared ids.
        host_only: the host's other ids (to be scored).
        host_only_labels: their true labels, held out for evaluation (no party sees them).
    """

    guest: PartyTable
    host: PartyTable
    overlap: np.ndarray
    host_only: np.ndarray
    host_only_labels: np.ndarray


def transfer_split(tables: dict[str, PartyTable], overlap_fraction: float = 0.1, seed: int = 0) -> TransferSplit:
    """Return an FTL setting: ``overlap_fraction`` of the ids shared, the rest split in half between the parties.

    Raises:
        ConfigError: ``overlap_fraction`` is not in (0, 1).
        DataError: the tables are not a guest with labels and a host over the same ids.
    """
    if not isinstance(overlap_fraction, float) or not 0 < overlap_fraction < 1:
        raise ConfigError(f"overlap_fraction: expected a number in (0, 1), got {overlap_fraction!r}")
    g, h = tables["guest"], tables["host"]
    if g.labels is None or not np.array_equal(np.sort(g.ids), np.sort(h.ids)):
        raise DataError("transfer_split: expected a labelled guest table and a host table over the same ids")
    ids = keyed_rng(seed, "ftl-split").permutation(np.sort(g.ids))
    k = max(1, round(overlap_fraction * len(ids)))
    overlap, rest = np.sort(ids[:k]), ids[k:]
    guest_only, host_only = np.sort(rest[: len(rest) // 2]), np.sort(rest[len(rest) // 2 :])
    host_part = h.select(np.concatenate([overlap, host_only]))
    return TransferSplit(
        g.select(np.concatenate([overlap, guest_only])),
        PartyTable(host_part.ids, host_part.features, host_part.feature_names),
        overlap,
        host_only,
        g.select(host_only).labels,
    )


@dataclass(frozen=True)
class FTLParty:
    """One party's trained half: its standardiser and representation network (never sent)."""

    feature_names: tuple[str, ...]
    standardizer: Standardizer
    network: nn.Sequential


@dataclass(frozen=True)
class GuestResult:
    """The guest's model, ``Phi`` and the mean training loss of each epoch."""

    model: FTLParty
    phi: np.ndarray
    train_loss: tuple[float, ...]


@dataclass(frozen=True)
class HostResult:
    """The host's model and the scores ``phi_j`` of the ids it asked for (only the host learns them)."""

    model: FTLParty
    scores: np.ndarray


def representation_network(config: FTLConfig, party: str, in_dim: int) -> nn.Sequential:
    """Return ``party``'s initial representation network (seeded by party name)."""
    return mlp(in_dim, config.hidden, config.dim, keyed_rng(config.seed, "ftl", party))


def overlap_batches(config: FTLConfig, overlap: np.ndarray, epoch: int) -> list[np.ndarray]:
    """Return the overlap ids of each step of ``epoch`` (a seeded shuffle)."""
    order = keyed_rng(config.seed, "ftl-shuffle", epoch).permutation(len(overlap))
    return [overlap[order[i : i + config.batch_size]] for i in range(0, len(overlap), config.batch_size)]


def _setup(channel: Channel, peer: str, config: FTLConfig, out_len: int, extra: dict) -> tuple[object, dict]:
    """Exchange config, output sizes and public keys; return the link and the peer's setup message."""
    secret = None
    fields = {"config": config.digest(), "out_len": out_len, **extra}
    if config.mode == "paillier":
        public, secret = he.keygen(config.key_bits)
        fields.update(he.public_to_wire(public))
    channel.send(peer, "ftl/setup", fields)
    msg = channel.recv(peer, "ftl/setup")
    if msg.get("config") != config.digest():
        raise ProtocolError(
            f"ftl/setup from {peer!r}: the config differs from this party's (expected {config.digest()})"
        )
    if not isinstance(msg.get("out_len"), int) or not 0 <= msg["out_len"] < 1 << 24:
        raise ProtocolError(f"ftl/setup from {peer!r}: expected a non-negative integer 'out_len'")
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
    on_epoch: Callable[[EpochDone], None] | None = None,
) -> GuestResult:
    """Run the label holder: train on the overlap with the host, then help score the host's rows.

    Args:
        channel: this party's channel.
        table: the guest's rows with 0/1 labels (overlap and guest-only).
        overlap: the shared ids (from PSI), all in ``table``.
        config: the agreed config.
        peer: the host's name.

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
    link, msg = _setup(channel, peer, config, fm.num_params(model.network) + 1, {"overlap": overlap})
    peer_len = msg["out_len"]
    x_all, y_all = scaler(table.features), torch.from_numpy(2 * table.labels.astype(np.float32) - 1)
    opt = torch.optim.Adam(model.network.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    history, step = [], 0
    for epoch in range(config.epochs):
        total = 0.0
        for ids in overlap_batches(config, overlap, epoch):
            channel.send(peer, "ftl/batch", {"step": step, "mode": "train", "ids": ids})
            total += _guest_step(
                link, step, (model.network, opt), (x_all, y_all, index.rows(ids, "ftl guest: batch")), config, peer_len
            )
            step += 1
        history.append(total / len(overlap))
        if on_epoch is not None:
            on_epoch(EpochDone(epoch + 1, config.epochs, history[-1]))
    channel.send(peer, "ftl/batch", {"step": step, "mode": "score", "ids": np.zeros(0, np.int64)})
    with torch.no_grad():
        phi = fm.phi_of(fm.represent(model.network, x_all), y_all).double().numpy()
    count = _score_request(channel, peer, step)
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


def _score_request(channel: Channel, peer: str, step: int) -> int:
    msg = channel.recv(peer, "ftl/score")
    if msg.get("step") != step or not isinstance(msg.get("count"), int) or not 0 <= msg["count"] < 1 << 24:
        raise ProtocolError(f"ftl/score from {peer!r}: expected step {step} and a non-negative 'count'")
    return msg["count"]


@one_torch_thread
def host(
    channel: Channel, table: PartyTable, config: FTLConfig, score_ids: Sequence[int] = (), peer: str = "guest"
) -> HostResult:
    """Run the feature holder without labels: train on the overlap, then score ``score_ids``.

    Args:
        channel: this party's channel.
        table: the host's rows (overlap and host-only).
        config: the agreed config.
        score_ids: the host's ids to score at the end (typically those outside the overlap).
        peer: the guest's name.

    Returns:
        The host's network and the scores of ``score_ids`` (logits; only the host learns them).

    Raises:
        ProtocolError: the guest's config, ids, sizes, keys or messages are wrong.
    """
    index, score_ids = RowIndex(table.ids), np.asarray(score_ids, dtype=np.int64)
    score_rows = index.rows(score_ids, "ftl host: score ids")
    scaler = Standardizer.fit(table.features)
    model = FTLParty(table.feature_names, scaler, representation_network(config, channel.name, table.features.shape[1]))
    link, msg = _setup(channel, peer, config, fm.num_params(model.network), {})
    index.rows(msg.get("overlap"), f"ftl/setup from {peer!r}: overlap ids")
    peer_len, d, x_all = msg["out_len"], config.dim, scaler(table.features)
    opt = torch.optim.Adam(model.network.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    for step in range(1 << 62):
        batch = channel.recv(peer, "ftl/batch")
        if batch.get("step") != step or batch.get("mode") not in ("train", "score"):
            raise ProtocolError(
                f"ftl/batch from {peer!r}: expected step {step} and mode train or score, got "
                f"{batch.get('step')!r}, {batch.get('mode')!r}"
            )
        if batch["mode"] == "score":
            break
        ids = batch.get("ids")
        rows = index.rows(ids, f"ftl/batch from {peer!r}")
        with torch.no_grad():
            u_b = fm.represent(model.network, x_all[rows]).double().numpy()
        theirs = link.swap(step, fm.host_terms(u_b), 2 * len(ids) * d + d * d)
        jac = fm.jacobian(model.network, x_all[rows])
        m, c = fm.host_map(u_b, config.gamma)
        out = link.apply(step, m, c, theirs, peer_len, left=jac.T)
        fm.apply_gradient(model.network, opt, out / len(ids))
    channel.send(peer, "ftl/score", {"step": step, "count": len(score_ids)})
    theirs = link.swap(step, np.zeros(0), d)
    with torch.no_grad():
        u_b = fm.represent(model.network, x_all[score_rows]).double().numpy()
    scores = link.apply(step, u_b, np.zeros(len(score_ids)), theirs, 0)
    return HostResult(model, scores)


@one_torch_thread
def score_guest(channel: Channel, phi: np.ndarray, config: FTLConfig, peer: str = "host") -> None:
    """Help the host score new rows of its own after training, with the trained ``Phi`` (the guest
    needs no rows; in ``paillier`` mode it sees only masked values, and the host learns the scores).

    Raises:
        ProtocolError: the host's config, keys or messages are wrong.
    """
    link, _ = _setup(channel, peer, config, 0, {})
    count = _score_request(channel, peer, 0)
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
    link, _ = _setup(channel, peer, config, 0, {})
    channel.send(peer, "ftl/score", {"step": 0, "count": len(table.ids)})
    theirs = link.swap(0, np.zeros(0), config.dim)
    with torch.no_grad():
        u_b = fm.represent(model.network, x).double().numpy()
    return link.apply(0, u_b, np.zeros(len(u_b)), theirs, 0)


def party_guest(
    channel: Channel, table: PartyTable, config: FTLConfig, on_epoch: Callable[[EpochDone], None] | None = None
) -> GuestResult:
    """The registry's guest role: find the overlap by PSI (this party leads), then run :func:`guest`."""
    overlap = intersect(channel, table.ids, PSIConfig(leader=channel.name))
    return guest(channel, table, overlap, config, peer=channel.peers[0], on_epoch=on_epoch)


def party_host(channel: Channel, table: PartyTable, config: FTLConfig) -> HostResult:
    """The registry's host role: PSI with the guest, then :func:`host`, scoring every id outside the overlap."""
    peer = channel.peers[0]
    overlap = intersect(channel, table.ids, PSIConfig(leader=peer))
    return host(channel, table, config, np.setdiff1d(table.ids, overlap), peer=peer)


__all__ = [
    "FTLConfig",
    "FTLParty",
    "GuestResult",
    "HostResult",
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
