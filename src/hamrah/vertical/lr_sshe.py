"""Vertical logistic regression between two parties without a third party: Paillier plus masking.

In the spirit of FATE's SSHE-LR (Chen et al. 2021, *When homomorphic encryption marries secret
sharing: secure large-scale sparse logistic regression and applications in risk control*) and of Yang
et al. 2019 (*Parallel distributed logistic regression for vertical federated learning without
third-party coordinator*). Guest and host each generate a Paillier key pair and keep the secret key.
Per mini-batch:

1. the guest sends ``[[z_A]]_G = [[0.25 u_A + 0.5 - y]]`` under its own key; the host sends
   ``[[0.25 u_B]]_H`` under its own key;
2. the host forms ``[[d]]_G = [[z_A]]_G + 0.25 u_B`` and ``[[X_B^T d]]_G``; the guest forms
   ``[[X_A^T 0.25 u_B]]_H``;
3. each packs its encrypted gradient and masks every value (an additive share of it: a uniform
   137-bit mask, statistical distance 2^-40) and asks the key owner to decrypt; the owner sees masked
   values only, the sender removes the masks. The guest's
   gradient is ``X_A^T z_A + X_A^T 0.25 u_B``.

Who sees what: the host sees only ciphertexts under the guest's key and masked values: no label,
residual, feature, weight or gradient of the guest. The guest sees ciphertexts under the host's key
and masked values: none of the host's features, scores, weights or gradients. Each party holds its
own weights in the clear (FATE's SSHE-LR secret-shares them too, so neither party knows even its own;
here each party's model part is its own). Once per epoch the host tells the guest its squared weight
change (the convergence test).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from hamrah.core.errors import ConfigError
from hamrah.data.vertical import PartyTable
from hamrah.vertical.lr_common import (
    LRConfig,
    LRState,
    OnEpoch,
    PaillierOps,
    PlainOps,
    prepare,
    standardise,
    train_loop,
)
from hamrah.vertical.lr_ops import keygen, public_from_wire, public_to_wire
from hamrah.vertical.lr_start import hello

__all__ = ["LRConfig", "guest", "host"]


def _keys(channel, config: LRConfig, peer: str) -> tuple:
    """Exchange public keys: return (my ops with my secret, ops under the peer's key)."""
    if not config.encrypted:
        channel.send(peer, "lr/key", {})
        channel.recv(peer, "lr/key")
        return PlainOps(), PlainOps()
    public, secret = keygen(config.scheme, config.key_bits)
    channel.send(peer, "lr/key", public_to_wire(public))
    theirs = public_from_wire(config.scheme, channel.recv(peer, "lr/key"), config.key_bits)
    return PaillierOps(public, config.precision_bits, secret), PaillierOps(theirs, config.precision_bits)


def _reveal_for(channel, peer: str, mine, tag: str, count: int) -> None:
    """Decrypt the peer's masked gradient (masked values to us) and send it back."""
    channel.send(
        peer,
        f"{tag}/reveal",
        mine.reveal(mine.from_wire(channel.recv(peer, f"{tag}/mask"), mine.wire_count(count), tag)),
    )


def _one_host(config: LRConfig) -> tuple[str]:
    if len(config.hosts) != 1:
        raise ConfigError(
            f"lr.hosts = {list(config.hosts)}: sshe_lr runs between the guest and one host (each holds a key "
            "the other computes under); for several hosts use coordinated_lr"
        )
    return config.hosts


def guest(
    channel,
    table: PartyTable,
    config: LRConfig,
    resume: Mapping[int, LRState] | None = None,
    on_epoch: OnEpoch | None = None,
) -> LRState:
    """The label holder's role. Returns its part of the model.

    Raises:
        DataError: bad labels or features, no shared ids. ProtocolError: a malformed message.
        PartyFailed: the host went away.
    """
    (peer,) = _one_host(config)
    table, x = prepare(channel, table, config, True, (peer,))
    start, dims, done, _ = hello(channel, config, (peer,), resume or {}, x.shape[1] + 1, table)
    if done:  # a finished run started again: its model as it ended
        return resume[start]
    z, *stats = standardise(x, resume[start] if start else None, True, config.clip, config.transform)
    mine, theirs = _keys(channel, config, peer)
    y = table.labels

    def step(tag: str, rows: np.ndarray, w: np.ndarray) -> np.ndarray:
        za = 0.25 * (z[rows] @ w) + 0.5 - y[rows]
        channel.send(peer, f"lr/za/{tag}", mine.to_wire(mine.enc(za)))
        ub = theirs.from_wire(channel.recv(peer, f"lr/ub/{tag}"), len(rows), f"[[u_B]] {tag}")
        masked, masks = theirs.mask(theirs.xt(z[rows], ub))
        channel.send(peer, f"lr/gA/{tag}/mask", theirs.to_wire(masked))
        _reveal_for(channel, peer, mine, f"lr/gB/{tag}", dims[peer])
        cross = theirs.unmask(channel.recv(peer, f"lr/gA/{tag}/reveal"), masks, z.shape[1], f"gradient {tag}")
        return (z[rows].T @ za + cross) / len(rows)

    return train_loop(
        channel,
        config,
        z,
        (start, resume[start] if start else None),
        step,
        (channel.name, (peer,)),
        on_epoch,
        tuple(stats),
        mine,
    )


def host(
    channel,
    table: PartyTable,
    config: LRConfig,
    resume: Mapping[int, LRState] | None = None,
    on_epoch: OnEpoch | None = None,
) -> LRState:
    """The feature holder's role (no labels). Returns its part of the model."""
    _one_host(config)
    peer = config.guest
    table, x = prepare(channel, table, config, False, (peer,))
    start, dims, done, _ = hello(channel, config, (peer,), resume or {}, x.shape[1], table)
    if done:
        return resume[start]
    z, *stats = standardise(x, resume[start] if start else None, False, config.clip, config.transform)
    mine, theirs = _keys(channel, config, peer)

    def step(tag: str, rows: np.ndarray, w: np.ndarray) -> np.ndarray:
        ub = 0.25 * (z[rows] @ w)
        channel.send(peer, f"lr/ub/{tag}", mine.to_wire(mine.enc(ub)))
        za = theirs.from_wire(channel.recv(peer, f"lr/za/{tag}"), len(rows), f"[[z_A]] {tag}")
        masked, masks = theirs.mask(theirs.xt(z[rows], theirs.add_plain(za, ub)))
        channel.send(peer, f"lr/gB/{tag}/mask", theirs.to_wire(masked))
        _reveal_for(channel, peer, mine, f"lr/gA/{tag}", dims[peer])
        return theirs.unmask(channel.recv(peer, f"lr/gB/{tag}/reveal"), masks, z.shape[1], f"gradient {tag}") / len(
            rows
        )

    return train_loop(
        channel,
        config,
        z,
        (start, resume[start] if start else None),
        step,
        (peer, (channel.name,)),
        on_epoch,
        tuple(stats),
        mine,
    )
