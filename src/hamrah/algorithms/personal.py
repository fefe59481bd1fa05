"""Personalized federated learning: every client keeps a model of its own beside the global one.

A method wraps any algorithm whose clients keep no state (FedAvg, FedProx, FedNova, FedSGD, the FedOpt
family: :class:`Personalized`). The wrapped algorithm trains and aggregates the global model as
before; what is the client's own is its persistent state (``ClientUpdate.state``: kept per client
by the simulator, in the Example Store by a device) and is never sent:

- **Ditto** (Li, Hu, Beirami and Smith 2021, *Ditto: Fair and Robust Federated Learning Through
  Personalization*, ICML, Algorithm 1): after its global update a client trains its personal model
  v_k on F_k(v) + lam/2 ||v - w_t||^2 with the same local plan, from where it left v_k (w_t the first
  time). lam = 0 is local training alone; a large lam keeps v_k at the global model (with local SGD
  lam must stay below 2 (1 + momentum) / lr, past which the pull alone diverges: refused at construction).
- **FedPer** (Arivazhagan et al. 2019, *Federated Learning with Personalization Layers*): the
  parameters under ``layers`` (name prefixes, e.g. the output layer) are personal. Local training
  starts from the global model with the client's own copy of them; their change is sent as zeros, so
  the server never sees them and the global model's copy stays at its initial value (what a client
  new to the run starts from).

Each method says where a client's local training starts (``start``), what of its change leaves
(``shared``), whether a second, personal pass trains and from where with which pull toward the
global model (``personal_pass``), and what the client keeps (``keep``); the one client half
(:func:`hamrah.algorithms.client_update`) and the batched trainer both follow it.
``personal_model(global_params, state)`` is the model a client uses and is scored with.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from hamrah.algorithms.base import (
    Algorithm,
    ClientResult,
    GradientTransform,
    LocalSGD,
)
from hamrah.algorithms.fedprox import check_pull
from hamrah.core.aggregate import Aggregate, Statistic
from hamrah.core.errors import ConfigError
from hamrah.core.numbers import check_number
from hamrah.core.params import Params

PERSONAL_METHODS = ("ditto", "fedper")


@dataclass(frozen=True)
class Ditto:
    """Ditto's personal model: v_k <- v_k - lr (grad F_k(v_k) + lam (v_k - w_t)), the round's local plan.

    Attributes:
        lam: the pull toward the global model (``personalization.lam``), >= 0.
    """

    lam: float = 0.1
    method: ClassVar[str] = "ditto"

    def __post_init__(self) -> None:
        check_number("personalization.lam", self.lam, 0.0)

    def start(self, global_params: Params, state: Params | None) -> Params:
        """Return where the global update starts: the global model."""
        return global_params

    def shared(self, delta: Params) -> Params:
        """Return what of the global update leaves the client: all of it."""
        return delta

    def personal_pass(self, global_params: Params, state: Params | None) -> tuple[Params, float]:
        """Return where the personal model's training starts (v_k) and its pull lam toward w_t."""
        return self.personal_model(global_params, state), self.lam

    def keep(self, local: Params, trained: Params | None) -> Params:
        """Return the client's new state: the personal model the personal pass trained."""
        assert trained is not None
        return trained

    def personal_model(self, global_params: Params, state: Params | None) -> Params:
        """Return the client's personal model v_k (the global model before its first training)."""
        return dict(state) if state is not None else dict(global_params)

    def check(self, names: Sequence[str]) -> None:
        """Nothing to check against the model: Ditto's personal model is the whole model."""


@dataclass(frozen=True)
class FedPer:
    """FedPer's personal layers: the parameters named ``p`` or ``p.<...>`` for a prefix ``p`` in ``layers``."""

    layers: tuple[str, ...]
    method: ClassVar[str] = "fedper"

    def __post_init__(self) -> None:
        if (
            not isinstance(self.layers, tuple)
            or not self.layers
            or not all(isinstance(p, str) and p for p in self.layers)
        ):
            raise ConfigError(
                f"personalization.layers = {self.layers!r}: expected a list of parameter-name prefixes kept on "
                'each client, e.g. ["fc3"]'
            )

    def personal(self, name: str) -> bool:
        """Return True when parameter ``name`` stays on the client."""
        return any(name == p or name.startswith(p + ".") for p in self.layers)

    def start(self, global_params: Params, state: Params | None) -> Params:
        """Return the global model with the client's own personal layers (the global ones at first)."""
        return self.personal_model(global_params, state)

    def shared(self, delta: Params) -> Params:
        """Return the delta with the personal layers' change replaced by zeros."""
        return {k: torch.zeros_like(v) if self.personal(k) else v for k, v in delta.items()}

    def personal_pass(self, global_params: Params, state: Params | None) -> None:
        """Return None: no second training; the personal layers train with the shared ones."""
        return None

    def keep(self, local: Params, trained: Params | None) -> Params:
        """Return the client's new state: the personal layers as local training left them."""
        return {k: v for k, v in local.items() if self.personal(k)}

    def personal_model(self, global_params: Params, state: Params | None) -> Params:
        """Return the global model with the client's personal layers."""
        own = state or {}
        return {k: own[k] if self.personal(k) and k in own else v for k, v in global_params.items()}

    def check(self, names: Sequence[str]) -> None:
        """Refuse prefixes that name no parameter of the model, or that name all of them.

        Raises:
            ConfigError: naming the model's parameters.
        """
        unknown = [p for p in self.layers if not any(n == p or n.startswith(p + ".") for n in names)]
        shared = [n for n in names if not self.personal(n)]
        if unknown or not shared:
            what = f"{unknown} name no parameter" if unknown else "every parameter would be personal"
            raise ConfigError(
                f"personalization.layers = {list(self.layers)}: {what}; expected prefixes of some of the "
                f"model's parameters ({', '.join(names)}), leaving the rest shared"
            )


Method = Ditto | FedPer


def method_of(name: str, lam: float | None = None, layers: Sequence[str] | None = None) -> Method:
    """Return the personalization method ``name`` ("ditto" with ``lam``, "fedper" with ``layers``).

    Raises:
        ConfigError: an unknown name, or a setting the method does not take.
    """
    if name == "ditto":
        if layers is not None:
            raise ConfigError('personalization.layers is FedPer\'s; expected it unset with method = "ditto"')
        return Ditto() if lam is None else Ditto(lam)
    if name == "fedper":
        if lam is not None:
            raise ConfigError('personalization.lam is Ditto\'s; expected it unset with method = "fedper"')
        return FedPer(tuple(layers) if isinstance(layers, (list, tuple)) else layers)  # type: ignore[arg-type]
    raise ConfigError(f"personalization.method = {name!r}: expected one of {', '.join(PERSONAL_METHODS)}")


@dataclass(frozen=True)
class Personalized:
    """``base`` with each client's own model (``method``); everything the server does is ``base``'s.

    Example:
        >>> from hamrah.algorithms import FedAvg, LocalSGD
        >>> Personalized(FedAvg(0.1, LocalSGD(1, 10, 0.1)), Ditto(0.5)).name
        'fedavg'
    """

    base: Algorithm
    method: Method
    stateful_clients: ClassVar[bool] = True  # the personal part is the client's state

    def __post_init__(self) -> None:
        if self.base.stateful_clients:
            raise ConfigError(
                f"personalization with algorithm {self.base.name}: its clients already keep state of their own "
                "(SCAFFOLD's control variate) where the personal model would be kept; expected an algorithm "
                "whose clients keep none (fedavg, fedprox, fednova, fedsgd, fedadam, fedyogi, fedadagrad, fedavgm)"
            )
        if isinstance(self.method, Ditto):  # the personal pass is SGD on F_k + lam/2 ||v - w_t||^2
            check_pull("personalization.lam", self.method.lam, self.base.local_plan())

    @property
    def name(self) -> str:
        return self.base.name

    @property
    def accepts_partial_work(self) -> bool:
        return self.base.accepts_partial_work

    @property
    def statistics(self) -> tuple[Statistic, ...]:
        return self.base.statistics

    @property
    def personalization(self) -> Method:
        return self.method

    def cohort_size(self, population: int) -> int:
        return self.base.cohort_size(population)

    def local_plan(self) -> LocalSGD:
        return self.base.local_plan()

    def local_transforms(
        self, global_params: Params, broadcast: Params | None, client_state: Params | None
    ) -> list[GradientTransform]:
        """Return the base's transforms (its clients keep no state: the personal part is not theirs)."""
        return self.base.local_transforms(global_params, broadcast, None)

    def next_client_state(self, *args: Any) -> Params | None:
        """Not used: :func:`hamrah.algorithms.client_update` asks the method (``personalization.keep``)."""
        raise NotImplementedError("Personalized: the client's state is the method's (personalization.keep)")

    def client_statistics(self, result: ClientResult) -> Params:
        return self.base.client_statistics(result)

    def init_server_state(self, params: Params) -> Any:
        return self.base.init_server_state(params)

    def broadcast(self, server_state: Any) -> Params | None:
        return self.base.broadcast(server_state)

    def apply(self, params: Params, aggregate: Aggregate, server_state: Any) -> tuple[Params, Any]:
        return self.base.apply(params, aggregate, server_state)

    def buffer_problem(self) -> str | None:
        return self.base.buffer_problem()


__all__ = ["PERSONAL_METHODS", "Ditto", "FedPer", "Method", "Personalized", "method_of"]
