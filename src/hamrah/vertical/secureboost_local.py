"""Run SecureBoost's roles in one process (tests, benchmarks): train and predict over a LocalNetwork.

Example::

    from hamrah.data.vertical import load_vertical
    from hamrah.vertical.secureboost_core import SecureBoostConfig
    from hamrah.vertical.secureboost_local import fit_local, predict_local

    tables = load_vertical("breast")
    fit = fit_local(tables, SecureBoostConfig(num_trees=5, key_bits=1024))
    probabilities = predict_local(fit, tables)
"""

from __future__ import annotations

import functools
import time
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from hamrah.data.vertical import PartyTable
from hamrah.vertical.channel import ChannelStats, run_parties
from hamrah.vertical.secureboost import guest
from hamrah.vertical.secureboost_core import SecureBoostConfig
from hamrah.vertical.secureboost_host import host
from hamrah.vertical.secureboost_model import (
    GuestModel,
    HostModel,
    predict_guest,
    predict_host,
)


def _host_role(channel, table: PartyTable, rng: np.random.Generator | None) -> HostModel:
    return host(channel, table, guest="guest", rng=rng)


@dataclass(frozen=True)
class LocalFit:
    """Both halves of a model trained in one process, each party's traffic and CPU seconds (its thread)."""

    guest: GuestModel
    hosts: dict[str, HostModel]
    stats: dict[str, ChannelStats]
    cpu_s: dict[str, float]


def fit_local(
    tables: Mapping[str, PartyTable], config: SecureBoostConfig, rng: np.random.Generator | None = None
) -> LocalFit:
    """Train with the guest ``tables["guest"]`` and every other table as a host.

    Args:
        tables: party name -> aligned table; ``"guest"`` holds the labels.
        config: hyperparameters and mode.
        rng: ``None`` for the OS CSPRNG; a Generator for reproducible keys and ciphertexts (tests).

    Raises:
        HamrahError: the first party's error (see :func:`~hamrah.vertical.channel.run_parties`).
    """
    hosts = tuple(n for n in tables if n != "guest")
    rngs = dict(zip(("guest", *hosts), rng.spawn(1 + len(hosts)))) if rng is not None else {}
    roles = {"guest": lambda ch: guest(ch, tables["guest"], config, hosts, rngs.get("guest"))}
    for name in hosts:
        roles[name] = functools.partial(_host_role, table=tables[name], rng=rngs.get(name))
    results, stats = run_parties({name: functools.partial(_timed, role) for name, role in roles.items()})
    return LocalFit(
        results["guest"][0], {n: results[n][0] for n in hosts}, stats, {n: r[1] for n, r in results.items()}
    )


def _timed(role, channel):
    start = time.thread_time()
    result = role(channel)
    return result, time.thread_time() - start


def predict_local(fit: LocalFit, tables: Mapping[str, PartyTable]) -> np.ndarray:
    """Return the probabilities of class 1 for the aligned rows of ``tables``."""
    roles = {"guest": lambda ch: predict_guest(ch, fit.guest, tables["guest"])}
    for name in fit.hosts:
        roles[name] = functools.partial(predict_host, model=fit.hosts[name], table=tables[name])
    results, _ = run_parties(roles)
    return results["guest"]
