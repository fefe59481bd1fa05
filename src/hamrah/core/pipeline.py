"""The client-update pipeline: a chain of stages, each with a client half and a server half.

After local training each client's update (``Params``: name -> tensor) flows through a :class:`Chain`
of stages (clipping, noise, compression, secure aggregation). The design follows optax's
``GradientTransformation(init, update)`` + ``chain`` and pfl's ``Postprocessor``
(``postprocess_one_user`` / ``postprocess_server``), with explicit state and exact wire bytes.

How to write a stage (subclass :class:`BaseStage`, a frozen dataclass, and override what you need):

- ``traits`` (a ``ClassVar`` or a property): a :class:`StageTraits` declaring what the stage is
  (``kind``), whether its payload can be summed in a ring, whether its server half needs each client's
  update, where it adds noise. :class:`Chain` checks these when built and refuses impossible orders.
- ``init_state(template)``: the per-client state (e.g. an error-feedback residual) or ``None``. The
  driver keeps one per client and stage across rounds (simulator: in memory; device: on disk).
- ``init_server(template)``: the server state (e.g. an adaptive clipping norm) or ``None``. Clients
  see it read-only as ``ctx.server_state`` (it is broadcast with the model: keep it public).
- ``encode(update, state, ctx) -> (payload, new_state)``: the client half. Randomness comes only from
  ``ctx.rng`` (a per-client, per-round numpy Generator) or ``ctx.round_seed`` (shared by the round's
  clients); ``ctx.upstream`` is the previous stage's payload (a secure-sum stage reads ring integers
  from it, see :class:`RingCodes`). Return a payload with ``nbytes == len(payload.to_bytes())``.
- ``decode(payload) -> Params``: the server's reconstruction of one payload. A client applies it too,
  to feed the next stage: only the LAST client-side stage's payload goes on the wire.
- ``read(data, spec) -> payload``: parse wire bytes; malformed bytes raise ``ProtocolError``.
- ``server(aggregate, state, ctx) -> (aggregate, new_state)``: the server half on the aggregate (central
  noise, norm updates), run in reverse chain order after aggregation.
- A stage of kind ``"secure_sum"`` (secure aggregation, HE) also implements
  ``aggregate(payloads, ctx) -> Params`` returning the SUM of its clients' inputs; the server never
  decodes a single payload of such a chain. A multi-message protocol implements
  ``secure_round(payloads, ctx) -> (sum, bytes sent per client, bytes received per client)`` instead,
  and the round's byte report carries those protocol bytes. In that mode each client's update is scaled by
  ``weight * m`` before the first stage (1 for equal weights), and the chain divides the sum by m.
- A stage with ``traits.needs_per_client_view`` (robust aggregation) implements
  ``combine(updates, weights, ctx) -> Params``, which replaces the weighted mean of decoded updates.
- A stage may implement ``bound_decoded(update, server_state) -> Params``: the server applies it to
  each client's decoded update before aggregation (central DP re-clips there, so a lossy codec cannot
  raise a client's contribution above the clip norm the noise is calibrated to). Under a secure sum
  the server never sees one client's update: such a stage must bound the contribution on the client.
- Auxiliary sums: a stage may add entries to the update under keys starting with ``"<stage name>:"``
  (e.g. adaptive clipping's was-clipped bit, Andrew et al. 2021); they travel through later stages and
  aggregation like any tensor (summed securely under secure aggregation) and its server half pops them.

Example:
    >>> import torch, numpy as np
    >>> chain = Chain([Identity()])
    >>> ups = {0: {"w": torch.ones(3)}, 1: {"w": torch.zeros(3)}}
    >>> out = process_round(chain, ups, {0: 1.0, 1: 3.0}, {}, {k: np.random.default_rng(k) for k in ups})
    >>> out.aggregate["w"].tolist(), out.bytes.up[0]
    ([0.25, 0.25, 0.25], 30)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Protocol

import numpy as np
import torch

from hamrah.core.aggregate import CombineRule, weighted_sum
from hamrah.core.checks import check_chain, check_statistics
from hamrah.core.errors import ConfigError, NotEnoughClients
from hamrah.core.params import Params
from hamrah.core.wire import DensePayload, Payload, Spec, WireReader, WireWriter, header_nbytes, spec_of

KINDS = ("identity", "codec", "clip", "noise", "secure_sum", "server")
NOISE_WHERE = (None, "client", "aggregate")


@dataclass(frozen=True)
class StageTraits:
    """What a stage is, for the chain's compatibility checks.

    Attributes:
        kind: one of ``KINDS``: identity, codec (lossy or not, changes the wire format), clip, noise,
            secure_sum (the server sees only the sum), server (acts only on the aggregate).
        summable_in_ring: its payload is integers with a scale shared by all clients, so a secure sum can
            add them: the payload then has a ``ring()`` method returning :class:`RingCodes`.
        needs_per_client_view: its server half must see each client's update (robust aggregation).
        adds_noise_where: None, "client" (local or distributed DP noise) or "aggregate" (central noise).
        client_side: the stage changes the update on the client (False: a server-only stage).
    """

    kind: str
    summable_in_ring: bool = False
    needs_per_client_view: bool = False
    adds_noise_where: str | None = None
    client_side: bool = True

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"stage kind {self.kind!r}: expected one of {KINDS}")
        if self.adds_noise_where not in NOISE_WHERE:
            raise ConfigError(f"adds_noise_where {self.adds_noise_where!r}: expected one of {NOISE_WHERE}")


@dataclass(frozen=True)
class RingCodes:
    """Integers a secure sum can add: value = offset + step * code, codes in [0, 2**bits), same for all clients.

    A sum of m clients' codes needs ``bits + ceil(log2 m)`` bits of ring to hold without wrapping.
    """

    spec: Spec
    codes: dict[str, np.ndarray]  # int64, flat, one per tensor of spec
    bits: int
    offset: float
    step: float

    def decode_sum(self, sums: Mapping[str, np.ndarray], count: int) -> Params:
        """Return the sum of ``count`` clients' decoded values from the sum of their codes."""
        return {
            name: (count * self.offset + self.step * torch.from_numpy(np.asarray(sums[name], dtype=np.float64)))
            .to(torch.float32)
            .reshape(shape)
            for name, shape in self.spec
        }


@dataclass(frozen=True)
class ClientContext:
    """What a stage's client half may use besides the update and its own state."""

    client_id: int
    round_idx: int
    rng: np.random.Generator
    round_seed: int = 0  # shared by every client of the round (e.g. a shared random mask)
    weight: float = 1.0  # this client's normalised aggregation weight p_k (sum over the round = 1)
    num_clients: int = 1
    upstream: Any = None  # the previous stage's payload
    server_state: Any = None  # this stage's server state, as broadcast


@dataclass(frozen=True)
class ServerContext:
    """What a stage's server half may use besides the aggregate and its state."""

    round_idx: int
    num_clients: int
    rng: np.random.Generator
    total_weight: float = 1.0


class Stage(Protocol):
    """One transform of the pipeline; see the module docstring for how to write one."""

    @property
    def name(self) -> str: ...  # read-only: a stage is frozen

    @property
    def traits(self) -> StageTraits: ...  # a class constant, or a property of the stage's settings

    def init_state(self, template: Params) -> Any: ...

    def init_server(self, template: Params) -> Any: ...

    def encode(self, update: Params, state: Any, ctx: ClientContext) -> tuple[Payload, Any]: ...

    def decode(self, payload: Any) -> Params: ...

    def read(self, data: bytes, spec: Spec) -> Payload: ...

    def server(self, aggregate: Params, state: Any, ctx: ServerContext) -> tuple[Params, Any]: ...


class BaseStage:
    """Defaults for a stage: no state, dense float32 payload, identity server half."""

    name: str = "stage"

    @property
    def traits(self) -> StageTraits:
        """Return what the chain's rules need to know of this stage (a subclass's class constant or property)."""
        return StageTraits("identity")

    def init_state(self, template: Params) -> Any:
        return None

    def init_server(self, template: Params) -> Any:
        return None

    def encode(self, update: Params, state: Any, ctx: ClientContext) -> tuple[Payload, Any]:
        return DensePayload(update), state

    def decode(self, payload: Any) -> Params:
        params: Params = payload.params
        return params

    def read(self, data: bytes, spec: Spec) -> Payload:
        r = WireReader(data, b"DENS", spec)
        out = {}
        for name, shape in spec:
            n = math.prod(shape)
            arr = np.frombuffer(r.raw(4 * n), dtype="<f4").astype(np.float32).reshape(shape)
            out[name] = torch.from_numpy(arr)
        r.finish()
        return DensePayload(out)

    def server(self, aggregate: Params, state: Any, ctx: ServerContext) -> tuple[Params, Any]:
        return aggregate, state


@dataclass(frozen=True)
class Identity(BaseStage):
    """Send the update as float32, unchanged."""

    name: str = "identity"
    traits: ClassVar[StageTraits] = StageTraits("identity")


@dataclass(frozen=True)
class Chain:
    """An ordered list of stages, checked when built (see :func:`check_chain`).

    Example:
        >>> Chain([Identity()]).names
        ('identity',)
    """

    stages: tuple[Any, ...] = ()

    def __init__(self, stages: Sequence[Stage] = ()):
        object.__setattr__(self, "stages", tuple(stages) or (Identity(),))
        check_chain(self.stages)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.stages)

    @property
    def secure_sum(self) -> int | None:
        """Return the index of the secure-sum stage, or None."""
        return next((i for i, s in enumerate(self.stages) if s.traits.kind == "secure_sum"), None)

    def _client_stages(self) -> list[int]:
        idx = [i for i, s in enumerate(self.stages) if s.traits.client_side]
        return idx or [-1]

    def wire_stage(self) -> Stage:
        """Return the stage whose payload goes on the wire (the last client-side stage)."""
        i = self._client_stages()[-1]
        return Identity() if i < 0 else self.stages[i]

    def init_client(self, template: Params) -> tuple[Any, ...]:
        """Return a fresh per-client state: one entry per stage."""
        return tuple(s.init_state(template) for s in self.stages)

    def init_server(self, template: Params) -> tuple[Any, ...]:
        """Return a fresh server state: one entry per stage."""
        return tuple(s.init_server(template) for s in self.stages)

    def encode(
        self, update: Params, state: tuple[Any, ...], ctx: ClientContext, server_state: tuple[Any, ...]
    ) -> tuple[Payload, tuple[Any, ...]]:
        """Run the client halves on one update; return the wire payload and the new client state."""
        states = list(state)
        x, payload = update, None
        client = self._client_stages()
        for j, i in enumerate(client):
            if i < 0:
                return DensePayload(update), state
            c = replace(ctx, upstream=payload, server_state=server_state[i])
            payload, states[i] = self.stages[i].encode(x, states[i], c)
            if j + 1 < len(client):
                x = self.stages[i].decode(payload)
        if payload is None:  # no stage encodes on the client: the update goes as it is
            return DensePayload(update), tuple(states)
        return payload, tuple(states)

    def decode_client(self, payload: Any, server_state: tuple[Any, ...] | None = None) -> Params:
        """Return one client's decoded update, bounded by every stage's ``bound_decoded`` (server side)."""
        update = self.wire_stage().decode(payload)
        for i, st in enumerate(self.stages):
            bound = getattr(st, "bound_decoded", None)
            if bound is not None:
                update = bound(update, None if server_state is None else server_state[i])
        return update

    def aggregate(
        self,
        payloads: Sequence[Any],
        weights: Sequence[float],
        ctx: ServerContext,
        server_state: tuple[Any, ...] | None = None,
        combine: CombineRule | None = None,
    ) -> Params:
        """Return the weighted mean of the clients' updates (the secure-sum stage's sum / m if any).

        Each decoded update is bounded first (:meth:`decode_client`, with the chain's ``server_state``);
        ``combine`` (a robust aggregation of the decoded updates) replaces the mean when given."""
        s = self.secure_sum
        if s is not None:
            total = self.stages[s].aggregate(payloads, ctx)
            return {k: v / len(payloads) for k, v in total.items()}
        sstate = server_state
        viewer = next((st for st in self.stages if st.traits.needs_per_client_view), None)
        if viewer is not None:
            combined: Params = viewer.combine([self.decode_client(p, sstate) for p in payloads], list(weights), ctx)
            return combined
        decoded = [self.decode_client(p, sstate) for p in payloads]
        if combine is not None:
            return combine(decoded, list(weights))
        return weighted_sum(decoded, list(weights))

    def server(self, aggregate: Params, state: tuple[Any, ...], ctx: ServerContext) -> tuple[Params, tuple[Any, ...]]:
        """Run the server halves on the aggregate, last stage first."""
        states = list(state)
        for i in reversed(range(len(self.stages))):
            aggregate, states[i] = self.stages[i].server(aggregate, states[i], ctx)
        return aggregate, tuple(states)


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
        The weighted mean of the processed updates, the exact bytes each way, new client and server states.

    Raises:
        NotEnoughClients: no update and no ``template``. ConfigError: weights do not match the updates.
    """
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
        payload, new_states[k] = chain.encode(update, state, ctx, sstate)
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


__all__ = [
    "KINDS",
    "BaseStage",
    "Chain",
    "ClientContext",
    "DensePayload",
    "Identity",
    "Payload",
    "RoundBytes",
    "RoundOutput",
    "ServerContext",
    "Spec",
    "Stage",
    "StageTraits",
    "WireReader",
    "WireWriter",
    "check_chain",
    "check_statistics",
    "header_nbytes",
    "process_round",
    "spec_of",
    "wire_spec",
]
