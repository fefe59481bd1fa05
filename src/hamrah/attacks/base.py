"""The attack object the simulator's ``attack=`` hook drives, and the seeded choice of malicious clients.

An :class:`Attack` joins two independent pieces: what the malicious clients train on
(a :class:`DataPoisoning`: label flipping, a backdoor trigger) and what they send
(an :class:`UpdatePoisoning`: sign flipping, scaling, noise, "a little is enough", model
replacement). Either may be None. All methods are pure and seeded by the ``rng`` they are given.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from hamrah.algorithms.base import ClientResult
from hamrah.core.errors import ConfigError
from hamrah.core.seeds import Stream, stream_rng
from hamrah.data.federated import ArrayData


class DataPoisoning(Protocol):
    """Change a malicious client's training data."""

    def poison(self, data: ArrayData, rng: np.random.Generator) -> ArrayData: ...

    def success_data(self, test: ArrayData) -> ArrayData | None: ...


class UpdatePoisoning(Protocol):
    """Replace the malicious clients' results, knowing the benign ones of the round."""

    def poison(
        self, malicious: list[ClientResult], benign: list[ClientResult], rng: np.random.Generator
    ) -> list[ClientResult]: ...


def choose_malicious(num_clients: int, fraction: float, seed: int) -> frozenset[int]:
    """Return round(fraction * num_clients) client ids drawn without replacement from ``seed``.

    Raises:
        ConfigError: ``fraction`` is not in [0, 1) or ``num_clients`` < 1.

    Example:
        >>> sorted(choose_malicious(10, 0.2, seed=0)) == sorted(choose_malicious(10, 0.2, seed=0))
        True
    """
    if isinstance(num_clients, bool) or not isinstance(num_clients, int) or num_clients < 1:
        raise ConfigError(f"num_clients = {num_clients!r}: expected an integer >= 1")
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0.0 <= fraction < 1.0:
        raise ConfigError(f"attack.malicious_fraction = {fraction!r}: expected a number in [0, 1)")
    count = int(round(fraction * num_clients))
    rng = stream_rng(seed, Stream.MALICIOUS)
    return frozenset(int(c) for c in rng.choice(num_clients, size=count, replace=False))


@dataclass(frozen=True)
class Attack:
    """One attack: which clients are malicious, what they train on and what they send.

    Args:
        name: short name for tables.
        malicious: the malicious client ids (see :func:`choose_malicious`).
        data_poisoning: applied to each malicious client's data before local training, or None.
        update_poisoning: applied to the malicious clients' results before aggregation, or None.

    Example:
        >>> from hamrah.attacks import LabelFlip
        >>> atk = Attack("flip", frozenset({3}), data_poisoning=LabelFlip(source=7, target=1))
        >>> atk.is_malicious(3), atk.is_malicious(4)
        (True, False)
    """

    name: str
    malicious: frozenset[int]
    data_poisoning: DataPoisoning | None = None
    update_poisoning: UpdatePoisoning | None = None

    def is_malicious(self, client_id: int) -> bool:
        """Return True when ``client_id`` is controlled by the attacker."""
        return int(client_id) in self.malicious

    def poison_data(self, client_id: int, data: ArrayData, rng: np.random.Generator) -> ArrayData:
        """Return the data client ``client_id`` trains on: poisoned if it is malicious."""
        if self.data_poisoning is None or not self.is_malicious(client_id):
            return data
        per_client = getattr(self.data_poisoning, "poison_client", None)  # DBA: each attacker its own part
        if per_client is not None:
            return per_client(client_id, data, rng)
        return self.data_poisoning.poison(data, rng)

    def poison_updates(
        self, malicious: list[ClientResult], benign: list[ClientResult], rng: np.random.Generator
    ) -> list[ClientResult]:
        """Return the results the malicious clients send instead of ``malicious``."""
        if self.update_poisoning is None or not malicious:
            return list(malicious)
        return self.update_poisoning.poison(list(malicious), list(benign), rng)

    def success_data(self, test: ArrayData) -> ArrayData | None:
        """Return the test inputs the attack aims at, labelled with the label it wants (None: untargeted)."""
        return None if self.data_poisoning is None else self.data_poisoning.success_data(test)
