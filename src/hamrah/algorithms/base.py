"""The contract every federated algorithm follows: a client half and a server half, no I/O.

A driver (the simulator, the server and the device runtime) asks the algorithm:

- how many clients to sample: :meth:`Algorithm.cohort_size`;
- the round's server->client extras: :meth:`Algorithm.broadcast` (SCAFFOLD's c, else None);
- the client half, always run through :func:`hamrah.algorithms.client_update`: the local plan
  (:meth:`Algorithm.local_plan`), the gradient transforms added to plain SGD
  (:meth:`Algorithm.local_transforms`) and the client's next persistent state
  (:meth:`Algorithm.next_client_state`);
- the statistics its clients send (:attr:`Algorithm.statistics`, computed from a client's
  :class:`ClientResult` by :meth:`Algorithm.client_statistics`, on the client);
- the server half: :meth:`Algorithm.init_server_state` and :meth:`Algorithm.apply`, which turns ONE
  :class:`~hamrah.core.aggregate.Aggregate` of those statistics (built by whatever path the round took:
  the weighted mean, a robust rule, the update pipeline, secure aggregation, HE, the server's streaming
  Aggregators) into the next global model and server state. No path hands it per-client results.

Server state is a frozen dataclass whose fields are ``Params`` or numbers
(:mod:`hamrah.algorithms.state` flattens it for a checkpoint).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import torch

from hamrah.core.aggregate import Aggregate, Statistic
from hamrah.core.errors import ConfigError
from hamrah.core.numbers import check_number
from hamrah.core.params import Params

OPTIMIZERS = ("sgd", "adam", "adamw")  # local solvers (``hamrah.algorithms.optimizers``)
DELTA = Statistic("delta", robust=True)
"""The model change w_local - w_global, n_k-weighted; the one statistic a robust aggregator may combine."""
FLOAT32_MAX = float(torch.finfo(torch.float32).max)  # the model's and the updates' dtype


@dataclass(frozen=True)
class ExampleDP:
    """Example-level DP-SGD in local training (Abadi et al. 2016): each step's gradient is the sum of
    the batch's per-example gradients, each clipped to L2 norm ``clip``, plus Gaussian noise of std
    ``noise_multiplier * clip``, divided by the (expected) batch size. What follows (an algorithm's
    gradient transforms, momentum, Adam) is post-processing and keeps the guarantee.

    Attributes:
        clip: S, the per-example L2 clip norm (``privacy.clip``).
        noise_multiplier: z (``privacy.noise_multiplier``).
        poisson: each step keeps every example with probability q = B/n (Abadi et al.'s lots, accounted
            with amplification by sampling) instead of a shuffled epoch of disjoint batches
            (``privacy.sampling = "poisson"`` or ``"fixed"``).
    """

    clip: float
    noise_multiplier: float
    poisson: bool = True

    def __post_init__(self) -> None:
        check_number("privacy.clip", self.clip, 0.0, open_low=True)
        check_number("privacy.noise_multiplier", self.noise_multiplier, 0.0)
        if not isinstance(self.poisson, bool):
            raise ConfigError(f"dp_poisson = {self.poisson!r}: expected true or false")


@dataclass(frozen=True)
class LocalSGD:
    """Local training a client runs: ``epochs`` passes of minibatch SGD (with optional momentum).

    Attributes:
        epochs: E, local passes over the client's data.
        batch_size: B, or None for the whole local data set as one batch (B = inf).
        lr: local learning rate.
        momentum: heavy-ball momentum rho of the local solver (0 = plain SGD).
        num_steps: if set, run exactly this many steps (fresh shuffle every pass) instead of epochs.
        optimizer: the local solver: "sgd", "adam" or "adamw" (:mod:`hamrah.algorithms.optimizers`).
        betas: Adam's moment decay rates (beta1, beta2); adam and adamw only.
        weight_decay: Adam's L2 term, or AdamW's decoupled decay; adam and adamw only.
        example_dp: train with example-level DP-SGD (:class:`ExampleDP`), or None.
    """

    epochs: int
    batch_size: int | None
    lr: float
    momentum: float = 0.0
    num_steps: int | None = None
    optimizer: str = "sgd"
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    example_dp: ExampleDP | None = None

    def __post_init__(self) -> None:
        if isinstance(self.epochs, bool) or not isinstance(self.epochs, int) or self.epochs < 1:
            raise ConfigError(f"algorithm.local_epochs = {self.epochs!r}: expected an integer >= 1")
        if self.batch_size is not None and (
            isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1
        ):
            raise ConfigError(f'algorithm.batch_size = {self.batch_size!r}: expected an integer >= 1 or "inf"')
        check_step_size("algorithm.lr", self.lr)
        check_number("algorithm.momentum", self.momentum, 0.0, 1.0, open_high=True)
        if self.num_steps is not None and (
            isinstance(self.num_steps, bool) or not isinstance(self.num_steps, int) or self.num_steps < 1
        ):
            raise ConfigError(f"algorithm.local_steps = {self.num_steps!r}: expected an integer >= 1")
        self._check_optimizer()

    def _check_optimizer(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            expected = ", ".join(OPTIMIZERS)
            raise ConfigError(f"algorithm.local_optimizer = {self.optimizer!r}: expected one of {expected}")
        if self.optimizer == "sgd":
            if self.weight_decay or self.betas != (0.9, 0.999):
                raise ConfigError(
                    'algorithm.local_betas and weight_decay: only with local_optimizer = "adam" or "adamw"'
                )
            return
        if self.momentum:
            raise ConfigError(
                f"algorithm.momentum = {self.momentum}: heavy-ball momentum is SGD's; Adam keeps its own "
                f'first moment (local_betas); expected momentum unset with local_optimizer = "{self.optimizer}"'
            )
        if len(self.betas) != 2:
            raise ConfigError(f"algorithm.local_betas = {list(self.betas)}: expected [beta1, beta2]")
        for b in self.betas:
            check_number("algorithm.local_betas", b, 0.0, 1.0, open_high=True)
        check_number("algorithm.weight_decay", self.weight_decay, 0.0)

    @property
    def plain_sgd(self) -> bool:
        """Plain SGD: no momentum, no adaptive optimizer, no DP-SGD (what the batched trainer runs)."""
        return self.optimizer == "sgd" and not self.momentum and self.example_dp is None

    def steps(self, num_examples: int) -> int:
        """Return the number of local SGD steps on ``num_examples`` examples (u_k in the paper)."""
        if self.num_steps is not None:
            return self.num_steps
        b = num_examples if self.batch_size is None else self.batch_size
        return self.epochs * math.ceil(num_examples / max(b, 1))


@dataclass(frozen=True)
class ClientResult:
    """What one client reports after a round: its model change and how much data produced it.

    Attributes:
        client_id: the client.
        delta: local model minus the round's global model.
        num_examples: n_k, the weight of this client in data-weighted means.
        metrics: numbers about the round; :func:`client_update` always sets ``train_loss`` and
            ``local_steps`` (tau_k, the SGD steps actually run).
        error: set (and ``delta`` empty) when the client failed: failures are values.
        aux: the change of the client's persistent state (SCAFFOLD's Delta c_i), sent for the server half.
    """

    client_id: int
    delta: Params
    num_examples: int
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    aux: Params = field(default_factory=dict)


@dataclass(frozen=True)
class ClientUpdate:
    """The client half's output: the result to send and the client's new persistent state (or None)."""

    result: ClientResult
    state: Params | None = None


@dataclass(frozen=True)
class NoState:
    """The server state of an algorithm that keeps none (FedAvg, FedSGD, FedProx, FedNova)."""


class GradientTransform(Protocol):
    """Change a minibatch gradient before the SGD step: ``(names, params, grads) -> grads``.

    ``names`` are the parameter names in the order of ``params`` and ``grads``. Transforms may keep
    state for one client's local run (momentum buffers); a fresh one is built per run.
    """

    def __call__(
        self, names: list[str], params: list[torch.Tensor], grads: list[torch.Tensor]
    ) -> list[torch.Tensor]: ...


class Algorithm(Protocol):
    """A federated algorithm: a client half and a server half, with explicit typed state.

    Each algorithm has its own server-state type (``NoState``, ``FedOptState``, ...); the protocol
    types it ``Any`` rather than becoming generic in it.
    """

    @property
    def name(self) -> str: ...

    @property
    def accepts_partial_work(self) -> bool: ...  # keep results of stragglers that ran fewer steps

    @property
    def stateful_clients(self) -> bool: ...  # clients keep state between their rounds (SCAFFOLD)

    def cohort_size(self, population: int) -> int: ...

    def local_plan(self) -> LocalSGD: ...

    def local_transforms(
        self, global_params: Params, broadcast: Params | None, client_state: Params | None
    ) -> list[GradientTransform]: ...

    def next_client_state(
        self,
        global_params: Params,
        local_params: Params,
        steps: int,
        broadcast: Params | None,
        client_state: Params | None,
    ) -> Params | None: ...

    @property
    def statistics(self) -> tuple[Statistic, ...]: ...  # what each client sends (the delta first)

    def client_statistics(self, result: ClientResult) -> Params: ...

    def init_server_state(self, params: Params) -> Any: ...

    def broadcast(self, server_state: Any) -> Params | None: ...

    def apply(self, params: Params, aggregate: Aggregate, server_state: Any) -> tuple[Params, Any]: ...

    def buffer_problem(self) -> str | None: ...

    @property
    def personalization(self) -> Any: ...  # each client's own model (hamrah.algorithms.personal), or None


def check_buffers(algorithm: Algorithm, model: torch.nn.Module) -> None:
    """Refuse a model with running statistics (BatchNorm's mean and variance travel with the update,
    ``hamrah.core.params.model_state``) under a server half that does not move each of them to a
    convex combination of the clients' values: it would step them like weights, and a running
    variance can go below 0 (NaN at evaluation).

    DP-SGD is refused with any such model: BatchNorm mixes a batch's examples, so per-example
    clipping would not bound one example's influence (and the statistics would leave unnoised).

    Raises:
        ConfigError: naming the algorithm's reason and the buffers.
    """
    problem = algorithm.buffer_problem()
    buffers = [name for name, b in model.named_buffers() if b.is_floating_point()]
    if buffers and algorithm.local_plan().example_dp is not None:
        raise ConfigError(
            f'privacy.mode = "dpsgd" with model {type(model).__name__}: its running statistics '
            f"({', '.join(buffers[:3])}{', ...' if len(buffers) > 3 else ''}) mix the examples of a batch, so "
            "per-example clipping does not bound one example's influence; expected a model without "
            "BatchNorm (GroupNorm or LayerNorm)"
        )
    if problem is not None and buffers:
        raise ConfigError(
            f"algorithm {algorithm.name} with model {type(model).__name__}: {problem}, and the model's running "
            f"statistics ({', '.join(buffers[:3])}{', ...' if len(buffers) > 3 else ''}) would be stepped like "
            "weights (a running variance can go below 0); expected a model without BatchNorm (GroupNorm or "
            "LayerNorm) or FedAvg, FedProx, SCAFFOLD with server_lr <= 1, FedSGD with lr <= 1"
        )


class Stateless:
    """Defaults for an algorithm whose client half is plain local SGD and whose server keeps no state."""

    accepts_partial_work: ClassVar[bool] = False
    stateful_clients: ClassVar[bool] = False
    statistics: ClassVar[tuple[Statistic, ...]] = (DELTA,)

    personalization: ClassVar[None] = None  # no client keeps a model of its own (hamrah.algorithms.personal)

    def client_statistics(self, result: ClientResult) -> Params:
        """Return the client's statistics: its delta, as ``"delta/<param>"``."""
        return delta_statistics(result)

    def buffer_problem(self) -> str | None:
        """Why the server half would not move running statistics to a convex combination of the
        clients' values (None: it does; the plain weighted mean of the deltas)."""
        return None

    def local_transforms(
        self, global_params: Params, broadcast: Params | None, client_state: Params | None
    ) -> list[GradientTransform]:
        """Return no transforms: plain SGD."""
        return []

    def next_client_state(
        self,
        global_params: Params,
        local_params: Params,
        steps: int,
        broadcast: Params | None,
        client_state: Params | None,
    ) -> Params | None:
        """Return None: the client keeps nothing between rounds."""
        return None

    def init_server_state(self, params: Params) -> Any:
        """Return the empty state."""
        return NoState()

    def broadcast(self, server_state: object) -> Params | None:
        """Return None: the round carries only the global model."""
        return None


def check_step_size(key: str, value: object, gain: float = 1.0, step: str = "") -> None:
    """Refuse a learning rate that is not a positive number, or whose step is certain to overflow float32.

    Every step multiplies a float32 tensor by the rate: above float32's largest number the rate itself
    is inf there, and the model inf (or NaN: 0 * inf) after the first step, whatever the update. ``gain``:
    the largest factor the algorithm puts on the rate whatever the update's size (FedOpt's normalised
    step); ``step`` says where it comes from.

    Raises:
        ConfigError: naming ``key``, the value and the accepted range.
    """
    check_number(key, value, 0.0, open_low=True)
    assert isinstance(value, (int, float))
    limit = FLOAT32_MAX / max(gain, 1.0)
    if value > limit:
        why = (
            step
            if gain > 1 and step
            else f"each step multiplies the float32 model's update by {key.split('.')[-1]}, which is inf there"
        )
        raise ConfigError(
            f"{key} = {value!r}: {why}, so the first step makes the model inf or NaN; expected a number in "
            f"(0, {limit:g}]"
        )


def cohort_size(client_fraction: float, population: int) -> int:
    """Return m = max(C * K, 1), McMahan et al.'s number of clients per round."""
    if isinstance(client_fraction, bool) or not 0.0 <= client_fraction <= 1.0:  # NaN fails the comparison
        raise ConfigError(f"algorithm.client_fraction = {client_fraction!r}: expected 0 <= C <= 1")
    return max(int(client_fraction * population + 1e-9), 1)


def delta_statistics(result: ClientResult) -> Params:
    """Return ``{"delta/<param>": delta}`` of one client's result."""
    return {f"{DELTA.name}/{k}": v for k, v in result.delta.items()}


def mean_delta(aggregate: Aggregate) -> Params:
    """Return the round's aggregated delta: sum_k w_k delta_k / sum_k w_k (or a robust rule's combination)."""
    return aggregate.mean(DELTA)


def apply_delta(params: Params, delta: Params, scale: float = 1.0) -> Params:
    """Return ``params + scale * delta`` as new tensors."""
    return {k: params[k] + scale * delta[k] for k in params}


__all__ = [
    "DELTA",
    "OPTIMIZERS",
    "Algorithm",
    "ClientResult",
    "ClientUpdate",
    "GradientTransform",
    "LocalSGD",
    "NoState",
    "Stateless",
    "apply_delta",
    "cohort_size",
    "delta_statistics",
    "mean_delta",
]
