"""One round through a chain: :func:`process_round` encodes, aggregates and runs the server halves.

It also counts the round's exact wire bytes each way (:class:`RoundBytes`) and returns the new client and
server states (:class:`RoundOutput`); :func:`wire_spec` gives the names and shapes a chain's payload carries.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from hamrah.core.aggregate import CombineRule
from hamrah.core.errors import ConfigError, NotEnoughClients, ProtocolError
from hamrah.core.params import Params
from hamrah.core.pipeline.chain import Chain
from hamrah.core.pipeline.stage import ClientContext, ServerContext
from hamrah.core.wire import DensePayload, Spec, spec_of


@dataclass(frozen=True)
class RoundBytes:
    """Exact wire bytes of one round: ``up[k]`` client k -> server, ``down[k]`` the model broadcast to k."""

    up: dict[int, int] = field(default_factory=dict)
    down: dict[int, int] = field(default_factory=dict)

    @property
    def total_up(self) -> int:
        return sum(self.up.values())

    @property
    def total_down(self) -> int:
        return sum(self.down.values())


@dataclass(frozen=True)
class RoundOutput:
    """What :func:`process_round` returns."""

    aggregate: Params
    bytes: RoundBytes
    states: dict[int, tuple[Any, ...]]  # the participating clients' new states (merge into the driver's store)
    server_state: tuple[Any, ...]
    refused: dict[int, str] = field(default_factory=dict)  # clients whose update the chain cannot carry: why


def wire_spec(chain: Chain, template: Params, server_state: tuple[Any, ...] | None = None) -> Spec:
    """Return the names and shapes the wire payload of ``chain`` carries for updates shaped like ``template``.

    The model's tensors plus any auxiliary ``"<stage>:"`` entries the client stages add (adaptive
    clipping's bit): found by encoding a zero update with fresh state (no client's data is involved).
    """
    zeros = {k: torch.zeros_like(v, dtype=torch.float32) for k, v in template.items()}
    sstate = chain.init_server(template) if server_state is None else server_state
    ctx = ClientContext(-1, 0, np.random.default_rng(0))
    payload, _ = chain.encode(zeros, chain.init_client(template), ctx, sstate)
    return spec_of(chain.wire_stage().decode(payload))


def _weights(client_updates: Mapping[int, Params], weights: Mapping[int, float], round_idx: int) -> dict[int, float]:
    if set(weights) != set(client_updates):
        raise ConfigError(
            f"round {round_idx}: weights for clients {sorted(weights)}, updates from "
            f"{sorted(client_updates)}; expected the same clients"
        )
    w = {k: float(weights[k]) for k in client_updates}
    if any(not math.isfinite(v) or v <= 0 for v in w.values()):
        raise ConfigError(f"round {round_idx}: weights {w}: expected positive finite numbers")
    total = sum(w.values())
    return {k: v / total for k, v in w.items()}


def process_round(
    chain: Chain,
    client_updates: Mapping[int, Params],
    weights: Mapping[int, float],
    states: Mapping[int, tuple[Any, ...]],
    rngs: Mapping[int, np.random.Generator],
    *,
    server_state: tuple[Any, ...] | None = None,
    round_idx: int = 0,
    round_seed: int | None = None,
    server_rng: np.random.Generator | None = None,
    through_bytes: bool = False,
    template: Params | None = None,
    combine: CombineRule | None = None,
    model: Params | None = None,
) -> RoundOutput:
    """Apply ``chain`` to one round: encode each client's update, aggregate, run the server halves.

    Args:
        chain: the stages.
        client_updates: client id -> update (delta = local - global).
        weights: client id -> aggregation weight (e.g. n_k); normalised here.
        states: client id -> that client's chain state from earlier rounds (missing: a fresh one).
        rngs: client id -> the client's generator for this round.
        server_state: the chain's server state (None: fresh).
        round_idx: the round, for contexts and messages.
        round_seed: seed shared by the round's clients (None: ``round_idx``).
        server_rng: the server's generator (None: one derived from ``round_seed``).
        through_bytes: serialise each payload and parse it back, as the real server does (against
            :func:`wire_spec`, so auxiliary ``"<stage>:"`` entries are expected).
        template: the model's tensors; with it an empty round (Poisson sampling may draw no client)
            still runs the server halves on a zero aggregate, so central noise is released.
        combine: a robust rule over the decoded updates that replaces the weighted mean (refused with a
            secure sum or central noise: :func:`check_statistics`).
        model: what the server sends each client, for the bytes down (None: ``template``).

    Returns:
        The weighted mean of the processed updates, the exact bytes each way, new client and server states,
        and the clients left out because the chain cannot encode their update (a value beyond what the
        wire format carries: ``refused``, with the reason); the others' weights are renormalised, as if
        the refused clients had not reported.

    Raises:
        NotEnoughClients: no update and no ``template``. ConfigError: weights do not match the updates.
    """
    _weights(client_updates, weights, round_idx)  # checked once, for every client
    refused: dict[int, str] = {}
    while True:
        live = {k: v for k, v in client_updates.items() if k not in refused}
        fresh = {k: copy.deepcopy(rngs[k]) for k in live}  # a retry draws what the first try would have
        try:
            out = _process_round(
                chain, live, {k: weights[k] for k in live}, states, fresh, server_state, round_idx,
                round_seed, server_rng, through_bytes, template, combine, model,
            )  # fmt: skip
        except _Unencodable as e:
            refused[e.client] = e.reason
            continue
        return RoundOutput(out.aggregate, out.bytes, out.states, out.server_state, refused)


class _Unencodable(Exception):
    def __init__(self, client: int, reason: str):
        super().__init__(reason)
        self.client, self.reason = client, reason


def _process_round(
    chain: Chain,
    client_updates: Mapping[int, Params],
    weights: Mapping[int, float],
    states: Mapping[int, tuple[Any, ...]],
    rngs: Mapping[int, np.random.Generator],
    server_state: tuple[Any, ...] | None,
    round_idx: int,
    round_seed: int | None,
    server_rng: np.random.Generator | None,
    through_bytes: bool,
    template: Params | None,
    combine: CombineRule | None,
    model: Params | None,
) -> RoundOutput:
    if not client_updates and template is None:
        raise NotEnoughClients(f"round {round_idx}: no client update to process")
    p = _weights(client_updates, weights, round_idx) if client_updates else {}
    template = template if template is not None else next(iter(client_updates.values()))
    seed = round_idx if round_seed is None else int(round_seed)
    sstate = chain.init_server(template) if server_state is None else server_state
    spec = wire_spec(chain, template, sstate) if through_bytes or not client_updates else ()
    m, summing = len(p), chain.secure_sum is not None
    payloads, new_states, up = [], {}, {}
    for k, update in client_updates.items():
        if summing:  # the server sees only the sum: weight on the client (x 1 for equal weights)
            update = {n: v * (p[k] * m) for n, v in update.items()}
        ctx = ClientContext(k, round_idx, rngs[k], seed, p[k], m)
        state = states.get(k) or chain.init_client(template)
        if len(state) != len(chain.stages):
            raise ConfigError(
                f"round {round_idx}: client {k} has state for {len(state)} stages; expected "
                f"{len(chain.stages)} ({', '.join(chain.names)})"
            )
        try:
            payload, new_states[k] = chain.encode(update, state, ctx, sstate)
        except ProtocolError as e:  # this client's update, not the round: left out (a device reports FAILED)
            raise _Unencodable(k, str(e)) from e
        up[k] = payload.nbytes
        if through_bytes and not summing:
            payload = chain.wire_stage().read(payload.to_bytes(), spec)
        payloads.append(payload)
    sctx = ServerContext(round_idx, m, server_rng or np.random.default_rng(np.random.SeedSequence([seed, 1])))
    secure = chain.stages[chain.secure_sum] if summing and chain.secure_sum is not None else None
    protocol_down: dict[int, int] = {}  # bytes a multi-message protocol sends to each client
    if payloads and secure is not None and hasattr(secure, "secure_round"):  # a protocol with its own wire bytes
        total, sent, received = secure.secure_round(payloads, sctx)
        agg = {k: v / m for k, v in total.items()}
        up = dict(zip(client_updates, sent))
        protocol_down = dict(zip(client_updates, received))
    elif payloads:
        agg = chain.aggregate(payloads, [p[k] for k in client_updates], sctx, sstate, combine)
    else:  # an empty round: the server halves still run (central DP releases noise alone)
        agg = {name: torch.zeros(shape, dtype=torch.float32) for name, shape in spec}
    agg, sstate = chain.server(agg, sstate, sctx)
    down = DensePayload(template if model is None else model).nbytes
    down_bytes = {k: down + protocol_down.get(k, 0) for k in client_updates}
    return RoundOutput(agg, RoundBytes(up, down_bytes), new_states, sstate)
