"""Vertical logistic regression with an arbiter holding the Paillier key (FATE's CoordinatedLR).

Hardy et al. 2017, *Private federated learning on vertically partitioned data via entity resolution
and additively homomorphic encryption*; FATE's CoordinatedLR. Per mini-batch:

1. each host sends ``[[0.25 u_B]]`` (its partial scores, encrypted under the arbiter's key);
2. the guest adds the hosts' parts, its plaintext part and the labels:
   ``[[d]] = sum of [[0.25 u_B]] + 0.25 u_A + 0.5 - y``, and sends ``[[d]]`` to every host;
3. each party computes its encrypted gradient ``X_p^T [[d]]``, packs it and masks every value,
   and the arbiter decrypts the masked sum; the party removes its mask and updates its weights.

Who holds what: the arbiter holds the secret key and no data; guest and host hold the public key.
Any number of hosts (FATE's multi-host CoordinatedLR); each runs the same role, and no host hears
from another. What each sees: a host sees ``[[d]]`` (ciphertexts); the guest sees each ``[[u_B]]`` (ciphertexts); the
arbiter sees only masked gradients (each value plus a uniform 137-bit mask: statistically
hidden, distance 2^-40) and, once per epoch, each party's
squared weight change (for the convergence test). Nobody sees another party's features, weights or
gradients. If the arbiter colludes with a party, that party can decrypt the other's ``[[u_B]]`` or
``[[d]]``: the protocol assumes a non-colluding arbiter (use ``sshe_lr`` when there is none to trust).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import numpy as np

from hamrah.data.vertical import PartyTable
from hamrah.vertical.lr_common import (
    LRConfig,
    LRState,
    OnEpoch,
    PaillierOps,
    PlainOps,
    decide_stop,
    prepare,
    standardise,
    train_loop,
)
from hamrah.vertical.lr_ops import keygen, public_from_wire, public_to_wire
from hamrah.vertical.lr_start import hello

__all__ = ["LRConfig", "arbiter", "guest", "host"]


def _ops(channel, config: LRConfig):
    msg = channel.recv(config.arbiter, "lr/key")
    if not config.encrypted:
        return PlainOps()
    return PaillierOps(public_from_wire(config.scheme, msg, config.key_bits), config.precision_bits)


def _resume(resume: Mapping[int, LRState] | None, start: int) -> tuple[int, LRState | None]:
    return start, (resume[start] if start else None)


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
        PartyFailed: another party went away.
    """
    hosts = config.hosts
    others = (*hosts, config.arbiter)
    table, x = prepare(channel, table, config, True, hosts)
    start, _, done, _ = hello(channel, config, others, resume or {}, x.shape[1] + 1, table)
    if done:  # a finished run started again: its model as it ended
        return resume[start]
    z, *stats = standardise(x, resume[start] if start else None, True, config.clip, config.transform)
    ops, y = _ops(channel, config), table.labels

    def step(tag: str, rows: np.ndarray, w: np.ndarray) -> np.ndarray:
        parts = [ops.from_wire(channel.recv(h, f"lr/ub/{tag}"), len(rows), f"[[u_B]] {tag} from {h!r}") for h in hosts]
        d = ops.add_plain(functools.reduce(ops.add, parts), 0.25 * (z[rows] @ w) + 0.5 - y[rows])
        for h in hosts:
            channel.send(h, f"lr/d/{tag}", ops.to_wire(d))
        masked, masks = ops.mask(ops.xt(z[rows], d))
        channel.send(config.arbiter, f"lr/g/{tag}", ops.to_wire(masked))
        return ops.unmask(channel.recv(config.arbiter, f"lr/g/{tag}"), masks, z.shape[1], f"gradient {tag}") / len(rows)

    return train_loop(
        channel, config, z, _resume(resume, start), step, (config.arbiter, others), on_epoch, tuple(stats)
    )


def host(
    channel,
    table: PartyTable,
    config: LRConfig,
    resume: Mapping[int, LRState] | None = None,
    on_epoch: OnEpoch | None = None,
) -> LRState:
    """A feature holder's role (no labels). Returns its part of the model."""
    others = (config.guest, config.arbiter)
    peers = (config.guest, *(h for h in config.hosts if h != channel.name))
    table, x = prepare(channel, table, config, False, peers)
    start, _, done, _ = hello(channel, config, others, resume or {}, x.shape[1], table)
    if done:
        return resume[start]
    z, *stats = standardise(x, resume[start] if start else None, False, config.clip, config.transform)
    ops = _ops(channel, config)

    def step(tag: str, rows: np.ndarray, w: np.ndarray) -> np.ndarray:
        channel.send(config.guest, f"lr/ub/{tag}", ops.to_wire(ops.enc(0.25 * (z[rows] @ w))))
        d = ops.from_wire(channel.recv(config.guest, f"lr/d/{tag}"), len(rows), f"[[d]] {tag}")
        masked, masks = ops.mask(ops.xt(z[rows], d))
        channel.send(config.arbiter, f"lr/g/{tag}", ops.to_wire(masked))
        return ops.unmask(channel.recv(config.arbiter, f"lr/g/{tag}"), masks, z.shape[1], f"gradient {tag}") / len(rows)

    return train_loop(
        channel, config, z, _resume(resume, start), step, (config.arbiter, others), on_epoch, tuple(stats), ops
    )


def arbiter(channel, table: PartyTable | None, config: LRConfig, resume=None, on_epoch=None) -> LRState:
    """The key holder's role: decrypts masked gradients and decides convergence. Holds no data."""
    others = (config.guest, *config.hosts)
    start, dims, done, converged = hello(channel, config, others, None, 0)
    if done:
        return LRState(start, np.zeros(0), np.zeros(0), np.zeros(0), converged)
    public, secret = keygen(config.scheme, config.key_bits) if config.encrypted else (None, None)
    for peer in others:
        channel.send(peer, "lr/key", public_to_wire(public) if public else {})
    ops = PaillierOps(public, config.precision_bits, secret) if public else PlainOps()
    epoch = start
    while True:
        for b, _ in enumerate(range(0, dims["rows"], config.batch_size or max(dims["rows"], 1))):
            for peer in others:
                tag = f"lr/g/{epoch}/{b}"
                channel.send(
                    peer, tag, ops.reveal(ops.from_wire(channel.recv(peer, tag), ops.wire_count(dims[peer]), tag))
                )
        stop, converged = decide_stop(channel, config, channel.name, others, epoch, 0.0)
        if stop:
            return LRState(epoch + 1, np.zeros(0), np.zeros(0), np.zeros(0), converged)
        epoch += 1
