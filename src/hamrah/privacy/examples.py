"""Each client's example-level privacy under DP-SGD: what its local trainings spent, and the budget
none may pass (``privacy.mode = "dpsgd"``, ``docs/dp.md``).

DP-SGD protects one example of one client's data, so the guarantee is per client: a client's epsilon
composes the privacy events of every local training it ran (``hamrah.algorithms.dpsgd.privacy_events``
of the plan it ran on its own number of examples), and clients that train more often or hold fewer
examples spend more. The ledger keeps those events by client and answers, before a client trains,
whether one more training keeps it within ``target_epsilon``: a client that would pass it sits the
round out. The run's reported epsilon is the largest any client has spent.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Sequence

from hamrah.core.errors import ConfigError
from hamrah.privacy.accounting import epsilon_of
from hamrah.privacy.events import RoundSpec

Events = Sequence[tuple[RoundSpec, int]]


class ExampleLedger:
    """Example-level privacy spent by each client, at ``delta``, with an optional cap.

    Args:
        delta: the delta of every client's (epsilon, delta) guarantee.
        target_epsilon: no client may spend more (None: spend is only reported).
        accountant: "rdp" or "pld" (Google's dp-accounting).

    Example:
        >>> ledger = ExampleLedger(delta=1e-5, target_epsilon=3.0)
        >>> one = [(RoundSpec.poisson(1.1, 10 / 600), 60)]   # one epoch, B = 10 of 600 examples
        >>> ledger.allows("a", one), ledger.charge("a", one), round(ledger.worst(), 2)
        (True, None, 1.17)
    """

    def __init__(self, delta: float, target_epsilon: float | None = None, accountant: str = "rdp"):
        if not 0.0 < delta < 1.0:
            raise ConfigError(f"privacy.delta = {delta!r}: expected a number in (0, 1)")
        if target_epsilon is not None and not target_epsilon > 0:
            raise ConfigError(f"privacy.target_epsilon = {target_epsilon!r}: expected a positive number")
        self.delta, self.target_epsilon, self.accountant = delta, target_epsilon, accountant
        self.spent: dict[Hashable, Counter[RoundSpec]] = {}
        self._cache: dict[frozenset[tuple[RoundSpec, int]], float] = {}

    def epsilon(self, client: Hashable, more: Events = ()) -> float:
        """Return ``client``'s epsilon so far (with ``more`` events added)."""
        events = Counter(self.spent.get(client, Counter()))
        for spec, count in more:
            events[spec] += count
        key = frozenset(events.items())
        if key not in self._cache:  # clients with equal histories share one computation
            self._cache[key] = epsilon_of(list(events.items()), self.delta, self.accountant)
        return self._cache[key]

    def allows(self, client: Hashable, events: Events) -> bool:
        """Return True when ``client`` may spend ``events`` without passing the target."""
        return self.target_epsilon is None or self.epsilon(client, events) <= self.target_epsilon

    def charge(self, client: Hashable, events: Events) -> None:
        """Add ``events`` (one local training) to ``client``'s spend."""
        spent = self.spent.setdefault(client, Counter())
        for spec, count in events:
            spent[spec] += count

    def worst(self) -> float | None:
        """Return the largest epsilon any client has spent (None: no client has trained)."""
        return max((self.epsilon(c) for c in self.spent), default=None)


__all__ = ["ExampleLedger"]
