"""Adaptive server optimisers: FedAdam, FedYogi, FedAdagrad (Reddi et al. 2021, *Adaptive Federated
Optimization*, ICLR; Algorithm 2) and FedAvgM, server momentum (Hsu et al. 2019, *Measuring the
Effects of Non-Identical Data Distribution for Federated Visual Classification*)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from hamrah.algorithms.base import LocalSGD, Stateless, check_step_size, cohort_size, mean_delta
from hamrah.core.aggregate import Aggregate
from hamrah.core.errors import ConfigError
from hamrah.core.numbers import check_number
from hamrah.core.params import Params

SERVER_OPTIMIZERS = ("adam", "yogi", "adagrad", "avgm")
# below TAU_MIN tau^2 (v's start) and the squares of deltas smaller than tau underflow to 0 in float32, so
# a tiny delta would step by m / tau (1e-25 / 1e-30 = 1e5), or 0 / 0 when tau itself rounds to 0
TAU_MIN = math.sqrt(float(torch.finfo(torch.float32).tiny))
TAU_MAX = math.sqrt(float(torch.finfo(torch.float32).max))  # tau^2, v's start, is finite in float32 below it


@dataclass(frozen=True)
class FedOptState:
    """Server optimiser state: first moment m (momentum for FedAvgM), second moment v, rounds applied."""

    m: Params
    v: Params
    step: int = 0


@dataclass(frozen=True)
class FedOpt(Stateless):
    """FedOpt: clients run local SGD as in FedAvg; the server treats Delta = agg(delta_k; n_k) as a
    pseudo-gradient and steps with ``optimizer``:

    - m = beta1 m + (1 - beta1) Delta (adam, yogi, adagrad use m; Reddi et al. set beta1 = 0.9);
    - adam: v = beta2 v + (1 - beta2) Delta^2; yogi: v = v - (1 - beta2) Delta^2 sign(v - Delta^2);
      adagrad: v = v + Delta^2; then x = x + server_lr m / (sqrt(v) + tau), v starting at tau^2;
    - avgm: m = beta1 m + Delta, x = x + server_lr m (server momentum, beta1 = 0.9 in Hsu et al.).

    As in the paper there is no bias correction. FedAvgM with beta1 = 0, server_lr = 1 is FedAvg.

    Example:
        >>> FedOpt(0.1, LocalSGD(1, 10, 0.1), "adam", server_lr=0.01).name
        'fedadam'
    """

    client_fraction: float
    local: LocalSGD
    optimizer: str = "adam"
    server_lr: float = 0.01
    beta1: float = 0.9
    beta2: float = 0.99
    tau: float = 1e-3

    def __post_init__(self) -> None:
        if self.optimizer not in SERVER_OPTIMIZERS:
            raise ConfigError(f"server optimizer {self.optimizer!r}: expected one of {', '.join(SERVER_OPTIMIZERS)}")
        check_number("algorithm.beta1", self.beta1, 0.0, 1.0, open_high=True)
        check_number("algorithm.beta2", self.beta2, 0.0, 1.0, open_high=True)
        check_step_size("algorithm.server_lr", self.server_lr, *self._first_step_gain())
        check_number("algorithm.tau", self.tau, 0.0, open_low=True)
        if not TAU_MIN <= self.tau < TAU_MAX:
            raise ConfigError(
                f"algorithm.tau = {self.tau!r}: v starts at tau^2 and the step is m / (sqrt(v) + tau) in float32, "
                "where this tau^2 underflows to 0 (a tiny delta then steps by m / tau) or overflows to inf; "
                f"expected a number in [{TAU_MIN:g}, {TAU_MAX:g})"
            )

    def _first_step_gain(self) -> tuple[float, str]:
        """The factor m / (sqrt(v) + tau) tends to in the first round for a delta much larger than tau,
        whatever its size (1 for avgm, whose step is server_lr m); and why, for a refusal."""
        if self.optimizer == "avgm":
            return 1.0, ""
        gain = (1 - self.beta1) / math.sqrt(1 - self.beta2 if self.optimizer != "adagrad" else 1.0)
        shown = "(1 - beta1)" if self.optimizer == "adagrad" else "(1 - beta1) / sqrt(1 - beta2)"
        return gain, (
            f"in the first round every coordinate whose delta is much larger than tau steps by about "
            f"server_lr {shown} = server_lr * {gain:g} (whatever the delta's size), past float32's largest number"
        )

    @property
    def name(self) -> str:
        return "fed" + self.optimizer

    def cohort_size(self, population: int) -> int:
        return cohort_size(self.client_fraction, population)

    def local_plan(self) -> LocalSGD:
        return self.local

    def init_server_state(self, params: Params) -> FedOptState:
        """Return m = 0 and v = tau^2."""
        return FedOptState(
            {k: torch.zeros_like(v) for k, v in params.items()},
            {k: torch.full_like(v, self.tau**2) for k, v in params.items()},
        )

    def apply(self, params: Params, aggregate: Aggregate, server_state: FedOptState) -> tuple[Params, FedOptState]:
        """Return the model after one server optimiser step on Delta = the aggregated delta, and the new moments."""
        delta = mean_delta(aggregate)
        b1, s = self.beta1, server_state
        if self.optimizer == "avgm":
            m = {k: b1 * s.m[k] + delta[k] for k in delta}
            new = {k: params[k] + self.server_lr * m[k] for k in params}
            return new, FedOptState(m, s.v, s.step + 1)
        m = {k: b1 * s.m[k] + (1 - b1) * delta[k] for k in delta}
        v = {k: self._second_moment(s.v[k], delta[k] ** 2) for k in delta}
        new = {k: params[k] + self.server_lr * m[k] / (v[k].sqrt() + self.tau) for k in params}
        return new, FedOptState(m, v, s.step + 1)

    def buffer_problem(self) -> str | None:
        if self.optimizer == "avgm" and self.beta1 == 0 and self.server_lr <= 1:
            return None
        if self.optimizer == "avgm":
            return (
                f"its server momentum (beta1 = {self.beta1}, server_lr = {self.server_lr}) overshoots the clients' mean"
            )
        return f"its server optimiser ({self.optimizer}) steps every tensor by server_lr m / (sqrt(v) + tau)"

    def _second_moment(self, v: torch.Tensor, d2: torch.Tensor) -> torch.Tensor:
        if self.optimizer == "adam":
            return self.beta2 * v + (1 - self.beta2) * d2
        if self.optimizer == "yogi":
            return v - (1 - self.beta2) * d2 * torch.sign(v - d2)
        return v + d2
