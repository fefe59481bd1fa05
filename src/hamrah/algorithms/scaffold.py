"""SCAFFOLD (Karimireddy et al. 2020, *SCAFFOLD: Stochastic Controlled Averaging for Federated
Learning*, ICML; Algorithm 1 with option II control variates)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from hamrah.algorithms.base import (
    DELTA,
    ClientResult,
    GradientTransform,
    LocalSGD,
    apply_delta,
    check_step_size,
    cohort_size,
)
from hamrah.algorithms.transforms import Correction
from hamrah.core.aggregate import Aggregate, Statistic
from hamrah.core.errors import ConfigError
from hamrah.core.params import Params

CONTROL = Statistic("control", weighting="unit")
"""Delta c_i = c_i+ - c_i, summed plainly over the clients (the server divides by N)."""


@dataclass(frozen=True)
class ScaffoldState:
    """SCAFFOLD's server state: the server control variate c."""

    c: Params


@dataclass(frozen=True)
class Scaffold:
    """SCAFFOLD: local steps y <- y - lr (g(y) + c - c_i); option II c_i+ = c_i - c + (x - y)/(K lr);
    the server steps x <- x + server_lr * mean(Delta y) and c <- c + (1/N) sum_i Delta c_i.

    Clients are stateful: c_i persists between a client's rounds (``client_update``'s ``state``;
    the change Delta c_i travels in ``ClientResult.aux``). Clients send two statistics: ``delta``
    (Delta y, n_k-weighted; a robust aggregator may replace its mean) and ``control`` (Delta c_i, a
    plain sum). Departure from the paper, to make the first round with c = c_i = 0 equal FedAvg's:
    Delta y is averaged with n_k weights (the paper uses 1/|S|).

    ``num_clients`` is N, the population: c moves by (1/N) sum_i Delta c_i always, as in the paper,
    whoever drops out. The client half needs no N (a device builds it from the FL plan, which carries
    N anyway); the server half refuses to run without it (a guess such as C / |reported| exceeds 1/N
    whenever clients drop out). The runner and the server fill N from the partition.

    Plain local SGD only: option II's c_i+ = c_i - c + (x - y_i)/(K lr) estimates the average
    corrected gradient from the distance travelled, which equals it only when each of the K steps
    moves by lr times the gradient; heavy-ball momentum moves farther (up to 1/(1 - rho) times), so
    ``momentum > 0`` and an adaptive local optimizer (Adam, AdamW) are refused at construction.

    Example:
        >>> Scaffold(0.1, LocalSGD(1, 10, 0.05), server_lr=1.0).name
        'scaffold'
    """

    client_fraction: float
    local: LocalSGD
    server_lr: float = 1.0
    num_clients: int | None = None
    name: str = "scaffold"
    accepts_partial_work: ClassVar[bool] = False
    stateful_clients: ClassVar[bool] = True
    statistics: ClassVar[tuple[Statistic, ...]] = (DELTA, CONTROL)
    personalization: ClassVar[None] = None

    def __post_init__(self) -> None:
        check_step_size("algorithm.server_lr", self.server_lr)
        if self.num_clients is not None and (
            isinstance(self.num_clients, bool) or not isinstance(self.num_clients, int) or self.num_clients < 1
        ):
            raise ConfigError(f"algorithm.num_clients = {self.num_clients!r}: expected an integer >= 1")
        if self.local.optimizer != "sgd":
            raise ConfigError(
                f'algorithm.local_optimizer = "{self.local.optimizer}": SCAFFOLD\'s option II control variate '
                "(x - y_i) / (K lr) assumes each local step moves lr times the corrected gradient, which an "
                'adaptive optimizer does not; expected local_optimizer = "sgd" with scaffold'
            )
        if self.local.momentum:
            raise ConfigError(
                f"algorithm.momentum = {self.local.momentum}: SCAFFOLD's option II control variate "
                "(x - y_i) / (K lr) assumes plain local SGD; expected momentum = 0 with scaffold"
            )

    def cohort_size(self, population: int) -> int:
        """Return m = max(C * population, 1), refused when it exceeds N (:meth:`check_round_size`)."""
        m = cohort_size(self.client_fraction, population)
        self.check_round_size(m, f"client_fraction = {self.client_fraction} of {population} clients gives {m}")
        return m

    def check_round_size(self, most: int, source: str) -> None:
        """Refuse rounds of ``most`` reports, more than N, where the config already sets both (the server's
        goal, its sites, the simulator's cohort); :meth:`apply` refuses such an aggregate in a round anyway.

        Raises:
            ConfigError: ``most`` > ``num_clients``; ``source`` names what set ``most``.
        """
        if self.num_clients is not None and most > self.num_clients:
            raise ConfigError(
                f"scaffold: {source} reports per round, but the population N (num_clients, from "
                f"data.num_clients) is {self.num_clients}: c moves by (1/N) sum of the reports' control "
                f"changes, so every full round would move it by more than their mean and be refused; expected "
                f"at most {self.num_clients} reports per round, or data.num_clients = the real population"
            )

    def local_plan(self) -> LocalSGD:
        return self.local

    def init_server_state(self, params: Params) -> ScaffoldState:
        """Return c = 0."""
        return ScaffoldState({k: torch.zeros_like(v) for k, v in params.items()})

    def broadcast(self, server_state: ScaffoldState) -> Params:
        """Return c, sent to the round's clients with the model."""
        return server_state.c

    def local_transforms(
        self, global_params: Params, broadcast: Params | None, client_state: Params | None
    ) -> list[GradientTransform]:
        """Return the correction c - c_i (c_i = 0 for a client's first round)."""
        c = broadcast if broadcast is not None else {k: torch.zeros_like(v) for k, v in global_params.items()}
        offset = {k: c[k] - client_state[k] for k in c} if client_state is not None else dict(c)
        return [Correction(offset)]

    def next_client_state(
        self,
        global_params: Params,
        local_params: Params,
        steps: int,
        broadcast: Params | None,
        client_state: Params | None,
    ) -> Params:
        """Return option II's c_i+ = c_i - c + (x - y_i) / (K lr); c_i unchanged when K = 0 (a client
        without examples saw no gradient: the formula would move c_i to c_i - c)."""
        if steps == 0:
            return {
                k: (client_state[k] if client_state is not None else torch.zeros_like(x)).clone()
                for k, x in global_params.items()
            }
        scale = 1.0 / (steps * self.local.lr)
        out = {}
        for k, x in global_params.items():
            ci = client_state[k] if client_state is not None else torch.zeros_like(x)
            c = broadcast[k] if broadcast is not None else torch.zeros_like(x)
            out[k] = ci - c + (x - local_params[k]) * scale
        return out

    def client_statistics(self, result: ClientResult) -> Params:
        """Return ``delta/`` = Delta y and ``control/`` = Delta c_i (zeros when the result carries none)."""
        out = {f"{DELTA.name}/{k}": v for k, v in result.delta.items()}
        out.update(
            {
                f"{CONTROL.name}/{k}": result.aux[k] if k in result.aux else torch.zeros_like(v)
                for k, v in result.delta.items()
            }
        )
        return out

    def buffer_problem(self) -> str | None:
        return None if self.server_lr <= 1 else f"server_lr = {self.server_lr} > 1 extrapolates past the clients' mean"

    def apply(self, params: Params, aggregate: Aggregate, server_state: ScaffoldState) -> tuple[Params, ScaffoldState]:
        """Return x + server_lr * mean(Delta y; n_k) and c + (1/N) sum_i Delta c_i.

        Raises:
            ConfigError: ``num_clients`` (N) is not set: the control variate's share cannot be guessed; or
                more than N clients reported (N is not the population).
            NotEnoughClients: the aggregate has weight 0.
        """
        if self.num_clients is None:
            raise ConfigError(
                "scaffold: the server half needs the population size N (num_clients) for the control "
                "variate's 1/N share; expected Scaffold(..., num_clients=N) (the runner and the "
                "server set it from the partition)"
            )
        if aggregate.count > self.num_clients:
            raise ConfigError(
                f"scaffold: {aggregate.count} clients reported but the population N (num_clients) is "
                f"{self.num_clients}, so c would move by more than the mean control change; expected "
                "num_clients = the number of clients in the partition"
            )
        dy = aggregate.mean(DELTA)
        total = aggregate.total(CONTROL)
        share = 1.0 / self.num_clients
        c = {k: v + share * total[k] for k, v in server_state.c.items()}
        return apply_delta(params, dy, self.server_lr), ScaffoldState(c)
