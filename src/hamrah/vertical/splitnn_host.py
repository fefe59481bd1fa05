"""SplitNN's feature holder (host): its bottom network, the activations it sends, the gradients it learns from.

The protocol and who sees what are described in :mod:`hamrah.vertical.splitnn`. A host keeps its
features, its standardiser and its bottom network; it sends only cut-layer activations (in the wire
dtype, with Gaussian noise when the config asks for it).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping

import numpy as np
import torch

from hamrah.core.errors import DataError, ProtocolError
from hamrah.data.vertical import PartyTable
from hamrah.vertical.channel import Channel
from hamrah.vertical.nets import (
    NetCheckpoint,
    RowIndex,
    Standardizer,
    check_array,
    keyed_rng,
    one_torch_thread,
    restore,
    snapshot,
)
from hamrah.vertical.psi import align
from hamrah.vertical.saved import need
from hamrah.vertical.splitnn_core import (
    BottomModel,
    SplitNNConfig,
    adam,
    bottom_network,
)


@one_torch_thread
def host(
    channel: Channel,
    table: PartyTable,
    config: SplitNNConfig,
    guest: str = "guest",
    on_epoch: Callable[[NetCheckpoint], None] | None = None,
    resume: Mapping[int, NetCheckpoint] | None = None,
) -> BottomModel:
    """Run a feature holder: train its bottom network, then answer evaluation batches until told to stop.

    Args:
        channel: this party's channel.
        table: this party's rows (no labels needed).
        config: must equal the guest's config.
        guest: the label holder's name.
        on_epoch: called after each training epoch with this party's checkpoint.
        resume: this party's checkpoints by completed epoch (the guest picks where to go on).

    Returns:
        This party's trained bottom model.

    Raises:
        ProtocolError: the guest's config differs, it asked for ids this party lacks (with
            ``config.psi``: ids outside the intersection), or a message is malformed, replayed or out of order.
    """
    if config.psi:  # the guest trains on the shared ids: this party answers for them only
        table = align(channel, table, guest, None, "splitnn")
    setup = channel.recv(guest, "splitnn/setup")
    if setup.get("config") != config.digest():
        raise ProtocolError(
            f"splitnn/setup from {guest!r}: the guest's config differs from this party's (expected {config.digest()})"
        )
    index = RowIndex(table.ids)
    rows = index.rows(setup.get("train_ids"), f"splitnn/setup from {guest!r}")
    model = BottomModel(
        channel.name,
        table.feature_names,
        Standardizer.fit(table.features[rows]),
        bottom_network(config, channel.name, table.features.shape[1]),
    )
    done = sorted(resume or ())
    channel.send(guest, "splitnn/ready", {"rows": len(rows), "done": np.array(done, dtype=np.int64)})
    start = channel.recv(guest, "splitnn/start").get("epoch")
    if isinstance(start, bool) or not isinstance(start, int) or not (start == 0 or start in done):
        raise ProtocolError(
            f"splitnn/start from {guest!r}: epoch {start!r}, expected 0 or one this party completed {done}"
        )
    serve(channel, model, table, config, guest, train=True, on_epoch=on_epoch, state=resume[start] if start else None)
    return model


@one_torch_thread
def serve(
    channel: Channel,
    model: BottomModel,
    table: PartyTable,
    config: SplitNNConfig,
    guest: str = "guest",
    train: bool = False,
    on_epoch: Callable[[NetCheckpoint], None] | None = None,
    state: NetCheckpoint | None = None,
) -> int:
    """Answer the guest's batches with this party's activations (and learn from gradients if ``train``).

    Args:
        channel: this party's channel.
        model: this party's bottom model.
        table: this party's rows; its feature names must be the model's.
        config: the agreed config.
        guest: the label holder's name.
        train: accept ``train`` batches and ends of epochs (a prediction session refuses them).
        on_epoch: called at the end of each training epoch with this party's checkpoint.
        state: a checkpoint to go on from (its network, Adam's state and the noise generator).

    Returns:
        The number of batches answered.

    Raises:
        DataError: ``table`` has other features than the model was trained on.
        ProtocolError: a malformed, replayed or out-of-order message, or an unexpected mode.
    """
    if table.feature_names != model.feature_names:
        raise DataError(
            f"{model.party}: the table's features {list(table.feature_names)} differ from the "
            f"model's {list(model.feature_names)}"
        )
    index, opt = RowIndex(table.ids), adam(config, model.network)
    noise = keyed_rng(config.seed, "splitnn-noise", model.party)
    epoch = 0
    if state is not None:
        restore(state.arrays, {"network": model.network}, opt)
        noise.bit_generator.state = json.loads(str(need(state.arrays, "noise", "SplitNN host checkpoint")))
        epoch = state.epoch
    for step in range(1 << 62):
        msg = channel.recv(guest, "splitnn/batch")
        mode = msg.get("mode")
        if msg.get("step") != step:
            raise ProtocolError(
                f"splitnn/batch from {guest!r}: expected step {step}, got {msg.get('step')!r} "
                "(a replayed or reordered message)"
            )
        if mode == "stop":
            return step
        if mode == "epoch" and train:
            epoch += 1
            if on_epoch is not None:
                arrays = snapshot(
                    {"network": model.network}, opt, noise=np.array(json.dumps(noise.bit_generator.state))
                )
                on_epoch(NetCheckpoint(epoch, arrays))
            continue
        if mode not in (("train", "eval") if train else ("eval",)):
            raise ProtocolError(f"splitnn/batch from {guest!r}: unexpected mode {mode!r}")
        rows = index.rows(msg.get("ids"), f"splitnn/batch from {guest!r}")
        x = model.standardizer(table.features[rows])
        with torch.set_grad_enabled(mode == "train"):
            act = model.network(x)
        wire = act.detach().numpy()
        if config.noise_std > 0:
            wire = wire + noise.normal(0.0, config.noise_std, wire.shape)
        channel.send(guest, "splitnn/activations", {"step": step, "a": wire.astype(config.wire_dtype)})
        if mode == "train":
            msg = channel.recv(guest, "splitnn/gradient")
            if msg.get("step") != step:
                raise ProtocolError(f"splitnn/gradient from {guest!r}: expected step {step}, got {msg.get('step')!r}")
            g = check_array(msg.get("g"), f"splitnn/gradient from {guest!r}", tuple(act.shape), config.wire_dtype)
            opt.zero_grad()
            act.backward(torch.from_numpy(g.astype(np.float32)))
            opt.step()
    raise AssertionError("unreachable")


__all__ = ["host", "serve"]
