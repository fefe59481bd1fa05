"""Split learning (SplitNN) between a label holder and feature holders.

Vepakomma, Gupta, Swedish, Raskar 2018, *Split learning for health: Distributed deep learning without
sharing raw patient data* (the vertically partitioned configuration); Ceballos et al. 2020, *SplitNN-driven
vertical partitioning*. Every party runs a bottom network on its own features up to the cut layer; the
label holder (guest) concatenates its own cut-layer output with the hosts', runs the top network and the
loss, and sends each host the gradient of the loss with respect to that host's activations. The top
network and the labels never leave the guest; features and bottom networks never leave their party.

Per mini-batch (ids agreed by a private set intersection beforehand):

1. guest -> host ``splitnn/batch``: step number, mode (``train`` / ``eval`` / ``stop``) and the batch's ids;
2. host -> guest ``splitnn/activations``: the host's cut-layer activations for those ids, cast to the
   wire dtype (``float16`` halves the bytes), with Gaussian noise of ``noise_std`` added when asked;
3. train mode only: guest -> host ``splitnn/gradient``: d loss / d activations, in the wire dtype.

Messages carry the step number, so a replayed or reordered message is refused. Who sees what is in
``docs/splitnn_ftl.md``.

This module holds the guest's role, prediction and the central baseline; the hosts' role is in
:mod:`hamrah.vertical.splitnn_host`, the config, models and networks all parties share in
:mod:`hamrah.vertical.splitnn_core` (both re-exported here).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from hamrah.core.errors import DataError, ProtocolError
from hamrah.data.vertical import PartyTable
from hamrah.vertical.channel import Channel
from hamrah.vertical.message import completed
from hamrah.vertical.nets import (
    NetCheckpoint,
    RowIndex,
    Standardizer,
    check_array,
    one_torch_thread,
    restore,
    snapshot,
)
from hamrah.vertical.psi import align
from hamrah.vertical.saved import need
from hamrah.vertical.splitnn_core import WIRE_DTYPES as WIRE_DTYPES  # re-exported, not in __all__
from hamrah.vertical.splitnn_core import (
    BottomModel,
    GuestModel,
    SplitNNConfig,
    SplitNNResult,
    adam,
    batches,
    bottom_network,
    top_network,
)
from hamrah.vertical.splitnn_host import host, serve


def _to_wire(x: torch.Tensor, config: SplitNNConfig) -> np.ndarray:
    return x.detach().numpy().astype(config.wire_dtype)


class _Session:
    """The guest's side of one conversation: numbers the steps, checks what comes back."""

    def __init__(self, channel: Channel, config: SplitNNConfig, hosts: Sequence[str]):
        self.channel, self.config, self.hosts, self.step = channel, config, tuple(hosts), 0

    def activations(self, ids: np.ndarray, mode: str) -> list[torch.Tensor]:
        for h in self.hosts:
            self.channel.send(h, "splitnn/batch", {"step": self.step, "mode": mode, "ids": ids})
        out = []
        for h in self.hosts:
            msg = self.channel.recv(h, "splitnn/activations")
            if msg.get("step") != self.step:
                raise ProtocolError(
                    f"splitnn/activations from {h!r}: expected step {self.step}, "
                    f"got {msg.get('step')!r} (a replayed or reordered message)"
                )
            a = check_array(
                msg.get("a"), f"splitnn/activations from {h!r}", (len(ids), self.config.cut_dim), self.config.wire_dtype
            )
            out.append(torch.from_numpy(a.astype(np.float32)).requires_grad_(mode == "train"))
        return out

    def gradients(self, acts: list[torch.Tensor]) -> None:
        for h, a in zip(self.hosts, acts):
            self.channel.send(h, "splitnn/gradient", {"step": self.step, "g": _to_wire(a.grad, self.config)})

    def next(self) -> None:
        self.step += 1

    def end_epoch(self) -> None:
        """Tell the hosts a training epoch ended (each then saves its checkpoint)."""
        for h in self.hosts:
            self.channel.send(h, "splitnn/batch", {"step": self.step, "mode": "epoch", "ids": np.zeros(0, np.int64)})
        self.next()

    def stop(self) -> None:
        for h in self.hosts:
            self.channel.send(h, "splitnn/batch", {"step": self.step, "mode": "stop", "ids": np.zeros(0, np.int64)})


def _check_labels(table: PartyTable) -> np.ndarray:
    if table.labels is None or not np.all((table.labels == 0) | (table.labels == 1)):
        raise DataError("guest: expected a table with 0/1 labels (the label holder)")
    return table.labels


@one_torch_thread
def guest(
    channel: Channel,
    table: PartyTable,
    config: SplitNNConfig,
    hosts: Sequence[str] = ("host",),
    train_ids: np.ndarray | None = None,
    eval_ids: np.ndarray | None = None,
    on_epoch: Callable[[NetCheckpoint], None] | None = None,
    resume: Mapping[int, NetCheckpoint] | None = None,
) -> SplitNNResult:
    """Run the label holder: train bottom + top networks with the hosts, then score ``eval_ids``.

    Args:
        channel: this party's channel.
        table: the guest's rows with 0/1 labels.
        config: the agreed config.
        hosts: the feature holders, in the order their cut layers are concatenated.
        train_ids: ids to train on (default: all of ``table``, with ``config.psi`` those every party
            holds), all held by every party.
        eval_ids: ids to score after training (default: none).
        on_epoch: called after each epoch with this party's checkpoint (its mean training loss too).
        resume: this party's checkpoints by completed epoch; training goes on after the last epoch
            every party completed, to the model an uninterrupted run trains.

    Returns:
        The guest's model, the loss per epoch and the scores of ``eval_ids``.

    Raises:
        DataError: the table has no 0/1 labels or lacks a training id.
        ProtocolError: a host's message is malformed, replayed, or of the wrong shape or dtype.
    """
    if config.psi:
        table = align(channel, table, channel.name, (channel.name, *hosts), "splitnn")
    labels = _check_labels(table)
    ids = table.ids if train_ids is None else np.asarray(train_ids, dtype=np.int64)
    rows = RowIndex(table.ids).rows(ids, "guest: train_ids")
    model = GuestModel(
        BottomModel(
            channel.name,
            table.feature_names,
            Standardizer.fit(table.features[rows]),
            bottom_network(config, channel.name, table.features.shape[1]),
        ),
        top_network(config, 1 + len(hosts)),
        tuple(hosts),
    )
    start = _agree_start(channel, config, hosts, ids, resume or {})
    session, opt, loss_fn = (
        _Session(channel, config, hosts),
        adam(config, model.bottom.network, model.top),
        nn.BCEWithLogitsLoss(),
    )
    networks = {"bottom": model.bottom.network, "top": model.top}
    history: list[float] = []
    if start:
        restore(resume[start].arrays, networks, opt)
        history = need(resume[start].arrays, "history", "SplitNN guest checkpoint").tolist()
    x_all, y_all = model.bottom.standardizer(table.features[rows]), torch.from_numpy(labels[rows].astype(np.float32))
    for epoch in range(start, config.epochs):
        total = 0.0
        for batch in batches(config, len(rows), epoch):
            acts = session.activations(ids[batch], "train")
            own = model.bottom.network(x_all[batch])
            loss = loss_fn(model.top(torch.cat([own, *acts], dim=1)).squeeze(1), y_all[batch])
            if not torch.isfinite(loss):
                raise ProtocolError(
                    _diverged(float(loss.detach()), epoch, dict(zip((channel.name, *hosts), (own, *acts))))
                )
            opt.zero_grad()
            loss.backward()
            opt.step()
            session.gradients(acts)
            session.next()
            total += float(loss.detach()) * len(batch)
        history.append(total / len(rows))
        session.end_epoch()
        if on_epoch is not None:
            state = snapshot(networks, opt, history=np.array(history))
            on_epoch(NetCheckpoint(epoch + 1, state, config.epochs, history[-1]))
    scores = np.zeros(0) if eval_ids is None else _score(session, model, table, np.asarray(eval_ids, np.int64))
    session.stop()
    return SplitNNResult(model, tuple(history), scores)


def _diverged(loss: float, epoch: int, acts: dict[str, torch.Tensor]) -> str:
    """Why training stopped on a non-finite loss: the largest cut-layer activation of each party (an
    order of magnitude; a host that sends huge activations shows up here), never a value of a row."""
    sizes = ", ".join(f"{name} {float(a.detach().abs().max()):.0e}" for name, a in acts.items())
    return (
        f"splitnn: the training loss is {loss} in epoch {epoch + 1}; expected a finite loss (the model would be "
        f"wrong). Largest |cut-layer activation| per party: {sizes}; a host's far above the guest's points at "
        "that host's activations, else lower lr"
    )


def _agree_start(channel: Channel, config: SplitNNConfig, hosts, ids: np.ndarray, resume: Mapping) -> int:
    """Send the setup (with the epochs this party has checkpoints of), read each host's; return and
    announce the last epoch every party completed (0: none)."""
    common = set(resume) | {0}
    for h in hosts:
        done = np.array(sorted(resume), dtype=np.int64)
        channel.send(h, "splitnn/setup", {"config": config.digest(), "train_ids": ids, "done": done})
    for h in hosts:
        theirs = channel.recv(h, "splitnn/ready").get("done")
        common &= completed(theirs, f"splitnn/ready from {h!r}: 'done'", config.epochs) | {0}
    start = max(common)
    for h in hosts:
        channel.send(h, "splitnn/start", {"epoch": start})
    return start


def _score(session: _Session, model: GuestModel, table: PartyTable, ids: np.ndarray) -> np.ndarray:
    rows = RowIndex(table.ids).rows(ids, "guest: eval ids")
    x = model.bottom.standardizer(table.features[rows])
    out = []
    with torch.no_grad():
        for start in range(0, len(ids), session.config.batch_size):
            part = slice(start, start + session.config.batch_size)
            acts = session.activations(ids[part], "eval")
            out.append(torch.sigmoid(model.top(torch.cat([model.bottom.network(x[part]), *acts], 1))).squeeze(1))
            session.next()
    return torch.cat(out).numpy().astype(np.float64) if out else np.zeros(0)


@one_torch_thread
def predict(
    channel: Channel, model: GuestModel, table: PartyTable, config: SplitNNConfig, ids: np.ndarray
) -> np.ndarray:
    """Score ``ids`` with a trained split model; each host runs :func:`serve` with its bottom model.

    Returns:
        The predicted probabilities, one per id (only the guest learns them).

    Raises:
        DataError: ``table`` has other features than the model, or lacks an id.
        ProtocolError: a host's message is malformed or replayed.
    """
    if table.feature_names != model.bottom.feature_names:
        raise DataError(
            f"guest: the table's features {list(table.feature_names)} differ from the model's "
            f"{list(model.bottom.feature_names)}"
        )
    session = _Session(channel, config, model.hosts)
    scores = _score(session, model, table, np.asarray(ids, dtype=np.int64))
    session.stop()
    return scores


def train_central(
    tables: dict[str, PartyTable],
    config: SplitNNConfig,
    guest: str = "guest",
    train_ids: np.ndarray | None = None,
    eval_ids: np.ndarray | None = None,
) -> SplitNNResult:
    """Train the same architecture on the joined table in one place: the baseline SplitNN must match.

    The networks start from the same weights as in :func:`guest` / :func:`host` (seeds keyed by party
    name), see the same standardised features and the same batch order, so in ``float32`` without
    noise the split run computes the same model up to float rounding.

    Args:
        tables: party name -> table, the guest's first and with labels; the others in the hosts' order.
        config: the architecture and schedule (``wire_dtype`` and ``noise_std`` do not apply).
        guest: the label holder's name (a key of ``tables``).
        train_ids: ids to train on (default: all of the guest's).
        eval_ids: ids to score after training.

    Returns:
        The guest part of the model, the loss per epoch and the scores of ``eval_ids``.

    Raises:
        DataError: no 0/1 labels, or a table lacks an id.
    """
    labels = _check_labels(tables[guest])
    ids = tables[guest].ids if train_ids is None else np.asarray(train_ids, dtype=np.int64)
    names = [guest, *[n for n in tables if n != guest]]
    parts = {n: tables[n].select(ids) for n in names}
    scalers = {n: Standardizer.fit(parts[n].features) for n in names}
    nets = {n: bottom_network(config, n, parts[n].features.shape[1]) for n in names}
    top = top_network(config, len(names))
    opt, loss_fn = adam(config, *nets.values(), top), nn.BCEWithLogitsLoss()
    x = {n: scalers[n](parts[n].features) for n in names}
    y = torch.from_numpy(tables[guest].select(ids).labels.astype(np.float32))
    del labels
    history = []
    for epoch in range(config.epochs):
        total = 0.0
        for batch in batches(config, len(ids), epoch):
            loss = loss_fn(top(torch.cat([nets[n](x[n][batch]) for n in names], 1)).squeeze(1), y[batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(batch)
        history.append(total / len(ids))
    scores = np.zeros(0)
    if eval_ids is not None:
        ev = np.asarray(eval_ids, dtype=np.int64)
        with torch.no_grad():
            joined = torch.cat([nets[n](scalers[n](tables[n].select(ev).features)) for n in names], 1)
            scores = torch.sigmoid(top(joined)).squeeze(1).numpy().astype(np.float64)
    model = GuestModel(
        BottomModel(guest, tables[guest].feature_names, scalers[guest], nets[guest]), top, tuple(names[1:])
    )
    return SplitNNResult(model, tuple(history), scores)


__all__ = [
    "BottomModel",
    "GuestModel",
    "NetCheckpoint",
    "SplitNNConfig",
    "SplitNNResult",
    "batches",
    "bottom_network",
    "guest",
    "host",
    "predict",
    "serve",
    "top_network",
    "train_central",
]
