"""Build an algorithm by name from plain hyperparameters: one factory for the runner and the device."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hamrah.algorithms.base import Algorithm, ExampleDP, LocalSGD
from hamrah.algorithms.fedavg import FedAvg
from hamrah.algorithms.fednova import FedNova
from hamrah.algorithms.fedopt import FedOpt
from hamrah.algorithms.fedprox import FedProx
from hamrah.algorithms.fedsgd import FedSGD
from hamrah.algorithms.personal import Personalized, method_of
from hamrah.algorithms.scaffold import Scaffold
from hamrah.core.aggregate import Statistic
from hamrah.core.errors import ConfigError
from hamrah.core.numbers import check_number

_LOCAL = {
    "local_epochs": 1,
    "batch_size": 10,
    "lr": 0.1,
    "momentum": 0.0,
    "local_steps": None,
    "local_optimizer": "sgd",
    "local_betas": (0.9, 0.999),
    "weight_decay": 0.0,
}
_OPT = ("server_lr", "beta1", "beta2", "tau")
_EXAMPLE_DP = ("dp_clip", "dp_noise_multiplier", "dp_poisson")  # privacy.mode = "dpsgd", set by the runner
PERSONAL = ("personal", "personal_lambda", "personal_layers")  # [personalization], set by the runner


def _example_dp(hp: dict[str, Any]) -> ExampleDP | None:
    if not any(k in hp for k in _EXAMPLE_DP):
        return None
    missing = [k for k in _EXAMPLE_DP[:2] if k not in hp]
    if missing:
        raise ConfigError(f"DP-SGD: {', '.join(missing)} not set; expected dp_clip and dp_noise_multiplier")
    return ExampleDP(hp["dp_clip"], hp["dp_noise_multiplier"], hp.get("dp_poisson", True))


def _local(hp: dict[str, Any]) -> LocalSGD:
    v = {**_LOCAL, **{k: hp[k] for k in _LOCAL if k in hp}}
    betas = v["local_betas"]
    betas = tuple(betas) if isinstance(betas, (list, tuple)) else betas  # a list in a config or a JSON plan
    return LocalSGD(
        v["local_epochs"],
        v["batch_size"],
        v["lr"],
        v["momentum"],
        v["local_steps"],
        v["local_optimizer"],
        betas,
        v["weight_decay"],
        _example_dp(hp),
    )


def _pick(hp: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    return {k: hp[k] for k in keys if k in hp}


def _fedopt(opt: str) -> Callable[[float, dict[str, Any]], Algorithm]:
    return lambda c, hp: FedOpt(c, _local(hp), opt, **_pick(hp, _OPT))


_FACTORIES: dict[str, tuple[tuple[str, ...], Callable[[float, dict[str, Any]], Algorithm]]] = {
    "fedsgd": (("client_fraction", "lr", *_EXAMPLE_DP), lambda c, hp: FedSGD(c, hp.get("lr", 0.1), _example_dp(hp))),
    "fedavg": ((*_LOCAL, *_EXAMPLE_DP), lambda c, hp: FedAvg(c, _local(hp))),
    "fedprox": ((*_LOCAL, *_EXAMPLE_DP, "mu"), lambda c, hp: FedProx(c, _local(hp), **_pick(hp, ("mu",)))),
    "scaffold": (
        (*_LOCAL, *_EXAMPLE_DP, "server_lr", "num_clients"),
        lambda c, hp: Scaffold(c, _local(hp), **_pick(hp, ("server_lr", "num_clients"))),
    ),
    "fednova": ((*_LOCAL, *_EXAMPLE_DP, "mu"), lambda c, hp: FedNova(c, _local(hp), **_pick(hp, ("mu",)))),
    **{f"fed{opt}": ((*_LOCAL, *_EXAMPLE_DP, *_OPT), _fedopt(opt)) for opt in ("adam", "yogi", "adagrad", "avgm")},
}
ALGORITHMS = tuple(_FACTORIES)
_CLASSES: dict[str, Any] = {  # the classes: their statistics are class variables
    "fedsgd": FedSGD,
    "fedavg": FedAvg,
    "fedprox": FedProx,
    "scaffold": Scaffold,
    "fednova": FedNova,
    **{f"fed{opt}": FedOpt for opt in ("adam", "yogi", "adagrad", "avgm")},
}


def statistics_of(name: str) -> tuple[Statistic, ...]:
    """Return the statistics the clients of algorithm ``name`` send (what a server needs before any
    hyperparameter is known: the update template of the pipeline and the report check).

    Raises:
        ConfigError: unknown name.
    """
    if name not in _CLASSES:
        raise ConfigError(f"algorithm.name = {name!r}: expected one of {', '.join(ALGORITHMS)}")
    stats: tuple[Statistic, ...] = _CLASSES[name].statistics
    return stats


def hyperparameters(name: str) -> tuple[str, ...]:
    """Return the hyperparameter names algorithm ``name`` accepts (besides client_fraction)."""
    if name not in _FACTORIES:
        raise ConfigError(f"algorithm.name = {name!r}: expected one of {', '.join(ALGORITHMS)}")
    return (*(k for k in _FACTORIES[name][0] if k != "client_fraction"), *PERSONAL)


def build(name: str, client_fraction: float = 0.1, **hyperparameters: Any) -> Algorithm:
    """Return the algorithm ``name`` built from plain hyperparameters (as in a config or an FL plan).

    Args:
        name: one of ``ALGORITHMS`` (fedsgd, fedavg, fedprox, scaffold, fednova, fedadam, fedyogi,
            fedadagrad, fedavgm).
        client_fraction: C, the share of clients per round.
        **hyperparameters: local_epochs, batch_size (None = inf), lr, momentum, local_steps, DP-SGD's
            dp_clip, dp_noise_multiplier and dp_poisson, and per algorithm mu, server_lr, beta1, beta2,
            tau, num_clients. Missing ones take defaults. ``personal`` ("ditto" or "fedper") with
            ``personal_lambda`` or ``personal_layers`` wraps the algorithm in
            :class:`~hamrah.algorithms.personal.Personalized`.

    Raises:
        ConfigError: unknown name, a hyperparameter the algorithm does not use, or a bad value (a
            client_fraction outside [0, 1], NaN or a bool included).

    Example:
        >>> build("fedprox", client_fraction=0.1, lr=0.01, local_epochs=20, mu=1.0).mu
        1.0
    """
    if name not in _FACTORIES:
        raise ConfigError(f"algorithm.name = {name!r}: expected one of {', '.join(ALGORITHMS)}")
    allowed, factory = _FACTORIES[name]
    # 0 is McMahan et al.'s C = 0: one client per round (cohort_size); checked here, not at the first round
    check_number("algorithm.client_fraction", client_fraction, 0.0, 1.0)
    personal = {k: hyperparameters.pop(k) for k in PERSONAL if k in hyperparameters}
    for key in hyperparameters:
        if key not in allowed:
            users = [n for n, (keys, _) in _FACTORIES.items() if key in keys]
            where = f" (used by {', '.join(users)})" if users else ""
            raise ConfigError(f"algorithm.{key} is not a hyperparameter of {name}{where}")
    algorithm = factory(client_fraction, hyperparameters)
    if not personal:
        return algorithm
    if "personal" not in personal:
        raise ConfigError(f"{', '.join(personal)} set without personal (the method: ditto or fedper)")
    method = method_of(personal["personal"], personal.get("personal_lambda"), personal.get("personal_layers"))
    return Personalized(algorithm, method)
