"""The chain: an ordered list of stages, checked when built, that runs their client and server halves.

:class:`Chain` encodes one client's update through the client halves (only the last client-side stage's
payload goes on the wire), decodes and bounds each client's payload on the server, aggregates them (or
lets a secure-sum stage or a robust combine do it) and runs the server halves on the aggregate.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from hamrah.core.aggregate import CombineRule, weighted_sum
from hamrah.core.checks import check_chain
from hamrah.core.params import Params
from hamrah.core.pipeline.stage import ClientContext, Identity, ServerContext, Stage
from hamrah.core.wire import DensePayload, Payload


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
