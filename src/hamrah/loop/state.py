"""The run's round loop as a value without I/O: which round is due, how a round's aggregate becomes
the next model, when the run ends. Both drivers pump it: the simulator through :func:`hamrah.loop.drive`
with itself as the in-process runner, the gRPC server from its commit step (``hamrah.server.commit``)
and its round machine, which gets the loop's decision to end with each ``Committed`` event.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch

from hamrah.algorithms.base import Algorithm
from hamrah.algorithms.state import flatten_state
from hamrah.core.aggregate import Aggregate
from hamrah.core.errors import ProtocolError
from hamrah.core.params import Params
from hamrah.core.updates import first_non_finite
from hamrah.loop.plan import RunPlan


class AggregateRefused(ProtocolError):
    """A round's aggregate gave a model or server state that is not finite: the round is not adopted."""


class Budget(Protocol):
    """What may stop a run before its last round (the privacy budget of a pipeline)."""

    def refusal(self, round_idx: int) -> str | None:
        """Return why round ``round_idx`` may not run, or None when it may."""
        ...


@dataclass(frozen=True)
class End:
    """Why a run ended: ``"rounds"`` (all run), ``"target"`` (accuracy reached) or ``"budget"``; on the
    server also ``"stopped"`` (by the operator) or ``"drained"`` (shut down to resume later)."""

    reason: str
    message: str = ""


@dataclass(frozen=True)
class Applied:
    """A round's new model and server state (and the state flattened, as a checkpoint stores it)."""

    params: Params
    state: Any
    tensors: dict[str, torch.Tensor]
    scalars: dict[str, Any]


class RoundLoop:
    """The global model, the algorithm's server state and the run's progress; no I/O, no clock.

    A driver pumps it: ``due()`` names the next round (None: the run is over, ``ended`` says why),
    the driver runs the round to one :class:`~hamrah.core.aggregate.Aggregate`, ``apply`` turns it
    into the next model (refusing one that is not finite), the driver scores and records it, and
    ``commit`` adopts it and decides whether the run goes on.

    Args:
        algorithm: whose server half (``apply``, ``broadcast``) the loop runs.
        plan: rounds, evaluation and stopping.
        params, state: the model and the algorithm's server state after round ``last_round``.
        last_round: the last committed round (0: a fresh run; a resumed run goes on after it).
        budget: asked before each round whether it may run (None: nothing limits the run).

    Example:
        >>> import torch
        >>> from hamrah.algorithms import FedAvg, LocalSGD
        >>> from hamrah.core.aggregate import Aggregate
        >>> algo = FedAvg(1.0, LocalSGD(1, 10, 0.1))
        >>> loop = RoundLoop(algo, RunPlan(rounds=1), {"w": torch.zeros(1)}, algo.init_server_state({}))
        >>> r = loop.due()
        >>> applied = loop.apply(r, Aggregate({"delta/w": torch.ones(1) * 4}, weight=2.0, count=2))
        >>> loop.commit(r, applied, test_accuracy=None), loop.params["w"]
        (End(reason='rounds', message=''), tensor([2.]))
    """

    def __init__(
        self,
        algorithm: Algorithm,
        plan: RunPlan,
        params: Params,
        state: Any,
        last_round: int = 0,
        budget: Budget | None = None,
    ):
        self.algorithm, self.plan, self.budget = algorithm, plan, budget
        self.params, self.state = params, state
        self.last_round = last_round
        self.ended: End | None = End("rounds") if last_round >= plan.rounds else None

    def due(self) -> int | None:
        """Return the round to run next, or None when the run is over (``ended`` says why)."""
        if self.ended is not None:
            return None
        round_idx = self.last_round + 1
        why = self.budget.refusal(round_idx) if self.budget is not None else None
        if why is not None:
            self.ended = End("budget", why)
            return None
        return round_idx

    def broadcast(self) -> Params | None:
        """Return the tensors the algorithm sends clients beside the model (SCAFFOLD's c), or None."""
        return self.algorithm.broadcast(self.state)

    def apply(self, round_idx: int, aggregate: Aggregate) -> Applied:
        """Return round ``round_idx``'s new model and server state from its aggregate (nothing adopted yet).

        Raises:
            AggregateRefused: the new model or server state holds NaN or an infinity.
        """
        params, state = self.algorithm.apply(self.params, aggregate, self.state)
        tensors, scalars = flatten_state(state)
        for what, values in (("new model", params), ("server state", tensors)):
            bad = first_non_finite(values)
            if bad is not None:
                raise AggregateRefused(f"round {round_idx}'s {what}: {bad} holds NaN or infinite values")
        return Applied(params, state, tensors, scalars)

    def commit(self, round_idx: int, applied: Applied | None, test_accuracy: float | None = None) -> End | None:
        """Adopt round ``round_idx`` (``applied``, or None: the model stays) and return why the run ends
        after it, or None when it goes on.

        Raises:
            ValueError: ``round_idx`` is not the round after the last committed one.
        """
        if round_idx != self.last_round + 1:
            raise ValueError(f"commit of round {round_idx}: the loop expects round {self.last_round + 1}")
        if applied is not None:
            self.params, self.state = applied.params, applied.state
        self.last_round = round_idx
        if self.plan.reached(test_accuracy):
            target = self.plan.target_accuracy
            self.ended = End("target", f"target accuracy {target:.4f} reached at round {round_idx}")
        elif round_idx >= self.plan.rounds:
            self.ended = End("rounds")
        return self.ended


__all__ = ["AggregateRefused", "Applied", "Budget", "End", "RoundLoop"]
