"""Train and score any vertical protocol with every party in this process: the parties' own role
functions, in threads over :func:`~hamrah.vertical.channel.run_parties`, exactly as ``hamrah party``
runs them between processes (``hamrah.vertical.registry`` names the protocols, its config classes the
settings).

Example::

    from hamrah.data.vertical import load_vertical
    from hamrah.vertical import train

    tables = load_vertical("breast")                      # {"guest": labels + 10 columns, "host": 20}
    model = train("sshe_lr", tables, {"epochs": 5, "key_bits": 1024})
    ids, probabilities = model.predict(tables)            # what the guest learns

A party's half of the model is what its role returned (``model.results``) and, as the arrays
``hamrah party`` would save to its ``model.npz``, ``model.arrays(party)``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hamrah.core.errors import ConfigError
from hamrah.core.files import check_writable_folder
from hamrah.data.vertical import PartyTable
from hamrah.vertical import psi
from hamrah.vertical.channel import DEFAULT_TIMEOUT_S, ChannelStats, run_parties
from hamrah.vertical.predict import score
from hamrah.vertical.registry import build_config, resolve
from hamrah.vertical.saved import model_file, save_arrays


@dataclass(frozen=True)
class Trained:
    """A protocol trained between parties in this process.

    Attributes:
        protocol: its registry name.
        settings: its config dataclass.
        roles: party name -> role (``guest``, ``host``, ``arbiter``).
        results: party name -> what its role returned (its half of the model, PSI's ids, ...).
        stats: party name -> the bytes and messages it sent and received.
        columns: party name -> the feature names it trained on.
    """

    protocol: str
    settings: object
    roles: Mapping[str, str]
    results: Mapping[str, object]
    stats: Mapping[str, ChannelStats]
    columns: Mapping[str, tuple[str, ...]]

    @property
    def guest(self) -> str:
        """The label holder's name."""
        return next(name for name, role in self.roles.items() if role == "guest")

    def arrays(self, party: str) -> dict[str, np.ndarray]:
        """Return ``party``'s half of the model as ``hamrah party`` saves it (``model.npz``).

        Raises:
            ConfigError: ``party`` holds no model (an arbiter; PSI trains none).
        """
        arrays = model_file(self.results.get(party), self.protocol, self.settings, self.columns.get(party))
        if arrays is None:
            raise ConfigError(f"{party!r} holds no model of {self.protocol!r} (parties: {dict(self.roles)})")
        return arrays

    def save(self, folder: str | Path) -> dict[str, Path]:
        """Write each party's half to ``folder/<party>/model.npz``, the file ``hamrah party`` writes, so
        that the parties can score rows with ``hamrah party --predict --model`` later; return the paths."""
        check_writable_folder(folder, "save: folder")
        paths = {}
        for party, role in self.roles.items():
            if role != "arbiter":
                paths[party] = Path(folder) / party / "model.npz"
                paths[party].parent.mkdir(parents=True, exist_ok=True)
                save_arrays(paths[party], self.arrays(party))
        return paths

    def predict(
        self, tables: Mapping[str, PartyTable | None], timeout_s: float = DEFAULT_TIMEOUT_S
    ) -> tuple[np.ndarray, np.ndarray]:
        """Score rows between the parties that hold a model, each with its own columns of them.

        Args:
            tables: party name -> its columns of the rows to score (any ids, any order; the parties
                score the ids all of them hold). FTL's guest needs none (``None`` or absent): the
                host scores rows of its own.

        Returns:
            The ids scored, sorted, and the scores the learner gets (the guest; FTL: the host):
            probabilities, one column per class for a multi-class SecureBoost model, or a
            regression's predictions.
        """
        parties = tuple(n for n, role in self.roles.items() if role != "arbiter")
        unknown = sorted(set(tables) - set(parties))
        if unknown:
            raise ConfigError(f"tables of {unknown}: not parties holding a model (expected some of {list(parties)})")
        arrays = {name: self.arrays(name) for name in parties}
        roles = {
            name: (
                lambda ch, n=name: score(
                    ch, tables.get(n), self.protocol, self.settings, arrays[n], self.guest, parties
                )
            )
            for name in parties
        }
        results, _ = run_parties(roles, timeout_s=timeout_s)
        return next((ids, out) for ids, out in results.values() if out is not None)


def train(
    protocol: str,
    tables: Mapping[str, PartyTable],
    settings: Mapping[str, object] | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    progress: Callable[[str], None] | None = None,
) -> Trained:
    """Train ``protocol`` between the parties of ``tables``, in this process.

    Args:
        protocol: a registry name (``psi``, ``coordinated_lr``, ``sshe_lr``, ``secureboost``,
            ``splitnn``, ``ftl``).
        tables: party name -> its table; the label holder is the config's ``guest`` (``"guest"`` by
            default), every other party a host. An arbiter (``coordinated_lr``) needs no table: it
            joins under the config's ``arbiter`` name.
        settings: the protocol's settings, as in the ``[protocol]`` table of a party's TOML.
        progress: called with a line per epoch, tree or PSI list a party completes (``"guest: tree
            3 done"``; PSI steps inside protocols included), what ``hamrah party`` prints; ``print``
            shows them.

    Raises:
        ConfigError: an unknown protocol or setting, or no table for the guest.
        HamrahError: the first party's error, naming the party.
    """
    spec, config = resolve(protocol), build_config(protocol, dict(settings or {}))
    if not isinstance(tables, Mapping) or not all(
        isinstance(n, str) and isinstance(t, PartyTable) for n, t in tables.items()
    ):
        raise ConfigError(f"{protocol}: tables: expected a mapping of party name -> PartyTable (hamrah.data.vertical)")
    guest = getattr(config, "guest", "guest")
    if guest not in tables:
        raise ConfigError(f"{protocol}: no table for the guest {guest!r} (tables of {sorted(tables)})")
    hosts = getattr(config, "hosts", None)
    if hosts is not None and set(tables) - {guest} != set(hosts):
        raise ConfigError(
            f"{protocol}: tables of hosts {sorted(set(tables) - {guest})}, but settings name hosts {list(hosts)}; "
            f"expected settings['hosts'] = {tuple(sorted(set(tables) - {guest}))} (or tables named as the hosts)"
        )
    roles = {name: "guest" if name == guest else "host" for name in tables}
    if "arbiter" in spec.roles:
        roles[getattr(config, "arbiter", "arbiter")] = "arbiter"
    calls = {name: _call(spec.roles[role], name, tables.get(name), config, progress) for name, role in roles.items()}
    results, stats = run_parties(calls, timeout_s=timeout_s)
    columns = {name: table.feature_names for name, table in tables.items()}
    return Trained(protocol, config, roles, results, stats, columns)


def _call(role: Callable, name: str, table: PartyTable | None, config, progress: Callable[[str], None] | None):
    """The party's role function as run_parties calls it, reporting progress where the role has it."""
    if progress is None:
        return lambda channel: role(channel, table, config)

    def report(state) -> None:
        progress(f"{name}: {state.progress()}")

    kwargs = {"on_epoch": report} if "on_epoch" in inspect.signature(role).parameters else {}

    def call(channel):
        with psi.local(report=report):  # the protocol's own PSI step reports too
            return role(channel, table, config, **kwargs)

    return call


__all__ = ["Trained", "train"]
