"""What a pipeline stage is: its traits, the contexts its halves see, the protocol and its defaults.

:class:`Stage` is the protocol every stage follows (see :mod:`hamrah.core.pipeline` for how to write one),
:class:`BaseStage` its defaults (no state, dense float32 payload, identity server half) and
:class:`Identity` the stage that sends the update unchanged. :class:`StageTraits` declares what a stage is
for the chain's checks; :class:`RingCodes` is what a secure sum adds; :class:`ClientContext` and
:class:`ServerContext` carry what a stage's two halves may use besides the update and their state.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import numpy as np
import torch

from hamrah.core.errors import ConfigError, ProtocolError
from hamrah.core.params import Params
from hamrah.core.wire import DensePayload, Payload, Spec, WireReader

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
    """One transform of the pipeline; see :mod:`hamrah.core.pipeline` for how to write one."""

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
            if not np.isfinite(arr).all():
                bad = int((~np.isfinite(arr)).sum())
                raise ProtocolError(f"payload {name}: expected finite values, got {bad} non-finite")
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
