"""How vertical LR's parties start a training run: the guest's hello.

Before the first batch every party tells the guest its completed epochs (checkpoints), its model
size, its ``[lr]`` settings and, without PSI, a digest of its ids in order; the guest checks that they
agree with its own and answers with the epoch all of them go on from (``Agreed``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import fields
from typing import NamedTuple

import numpy as np

from hamrah.core.errors import ConfigError, DataError, ProtocolError
from hamrah.data.vertical import PartyTable
from hamrah.vertical.lr_common import LRConfig, LRState
from hamrah.vertical.message import completed


class Agreed(NamedTuple):
    """What the guest's hello settles: the epoch to go on from, each party's model size (and the guest's
    ``rows``), and whether the run already ended at ``start`` (its last epoch, or converged)."""

    start: int
    dims: dict[str, int]
    done: bool = False
    converged: bool = False


SHARED = tuple(f.name for f in fields(LRConfig) if f.name != "precompute")  # every party runs with these


def _settings(config: LRConfig) -> dict:
    return json.loads(json.dumps({k: getattr(config, k) for k in SHARED}))  # tuples as lists, as on the wire


def _ids_digest(table: PartyTable) -> str:
    return hashlib.sha256(table.ids.astype("<i8").tobytes()).hexdigest()


def hello(
    channel,
    config: LRConfig,
    others: tuple[str, ...],
    resume: Mapping[int, LRState] | None,
    dim: int,
    table: PartyTable | None = None,
) -> Agreed:
    """Agree on the epoch to resume from, check that every party runs the same settings, and tell each
    other the model sizes.

    The guest collects every party's completed epochs (``resume`` None: the arbiter, which keeps none)
    and picks the last one all of them hold (0: start afresh). It refuses a party whose ``[lr]``
    settings differ from its own and, with ``psi = false``, one whose ids (a digest of them, in order)
    differ from its own.

    Returns:
        The start epoch, each party's number of weights, and whether the run is already over.

    Raises:
        ConfigError: a party with other settings. DataError: other ids (``psi = false``).
        ProtocolError: a malformed hello.
    """
    epochs = sorted(resume or ())
    mine = {"epochs": np.array(epochs, dtype=np.int64), "any": resume is None, "dim": dim}
    mine["settings"] = json.dumps(_settings(config))
    if table is not None and not config.psi:
        mine["ids"] = _ids_digest(table)
    if channel.name != config.guest:
        channel.send(config.guest, "lr/hello", mine)
        reply = channel.recv(config.guest, "lr/start")
        flags = {k: reply.get(k) is True for k in ("done", "converged")}
        dims = {k: _int_field(reply, k, config.guest) for k in reply if k not in ("start", *flags)}
        return Agreed(_int_field(reply, "start", config.guest), dims, **flags)
    common, dims = set(epochs) | {0}, {channel.name: dim, "rows": 0 if table is None else len(table.ids)}
    for peer in others:
        msg = channel.recv(peer, "lr/hello")
        _agree(config, msg, peer, mine.get("ids"))
        dims[peer] = _int_field(msg, "dim", peer)
        if msg.get("any") is not True:
            common &= completed(msg.get("epochs"), f"lr/hello from {peer!r}: 'epochs'", config.epochs) | {0}
    start = max(common)
    converged = bool(start and resume[start].converged)
    done = converged or start >= config.epochs
    for peer in others:
        channel.send(peer, "lr/start", {"start": start, "done": done, "converged": converged, **dims})
    return Agreed(start, dims, done, converged)


def _agree(config: LRConfig, msg: dict, peer: str, ids: str | None) -> None:
    """Refuse a hello from a party set up differently from the guest."""
    try:
        theirs = json.loads(msg["settings"])
    except (KeyError, TypeError, ValueError):
        theirs = None
    if not isinstance(theirs, dict):
        raise ProtocolError(f"lr/hello from {peer!r}: expected its settings as a JSON object")
    for key, value in _settings(config).items():
        if theirs.get(key) != value:
            raise ConfigError(
                f"lr.{key}: {peer!r} runs with {theirs.get(key)!r}, the guest {config.guest!r} with {value!r}; "
                "every party needs the same [lr] settings"
            )
    if ids is not None and msg.get("any") is not True and msg.get("ids") != ids:
        raise DataError(
            f"lr: {peer!r} holds other ids, or the same ids in another order, than the guest {config.guest!r}; "
            "with psi = false every table must list the same ids in the same order (or set psi = true)"
        )


def _int_field(msg: dict, key: str, frm: str) -> int:
    v = msg.get(key)
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise ProtocolError(f"from {frm!r}: expected a non-negative integer {key!r}, got {v!r}")
    return v


__all__ = ["SHARED", "Agreed", "hello"]
