"""The mechanism of one DP round (:class:`RoundSpec`) and its dp-accounting event.

Each round is one sampled Gaussian mechanism, described by a :class:`RoundSpec`:

- ``poisson``: every client joins independently with probability q; add/remove-one neighbours;
  ``PoissonSampledDpEvent(q, GaussianDpEvent(z))`` (sum sensitivity S, noise std z*S).
- ``fixed``: m of K clients without replacement; replace-one neighbours (K is public);
  ``SampledWithoutReplacementDpEvent(K, m, GaussianDpEvent(z / 2))``: replacing one clipped update
  moves the sum by up to 2S, and dp-accounting's multiplier is std / sensitivity. Only the RDP
  accountant supports this event (Wang, Balle, Kasiviswanathan 2019); the PLD accountant of
  dp-accounting 0.6 does not, so that combination is refused (:class:`hamrah.privacy.DPConfig`).
- ``tree``: DP-FTRL's tree aggregation without sampling (Kairouz et al. 2021, *Practical and Private
  (Deep) Learning without Sampling or Shuffling*): the tree restarts every ``tree_size`` rounds and each
  client contributes at most once per tree; neighbours replace one client's contributions by zero
  (dp-accounting's REPLACE_SPECIAL). n rounds are ``SelfComposedDpEvent(SingleEpochTreeAggregationDpEvent(z,
  k), n // k)`` composed with the partial tree ``SingleEpochTreeAggregationDpEvent(z, n % k)`` (their
  Appendix D: RDP alpha * ceil(log2(k + 1)) / (2 z^2) per tree). RDP only.
- ``none``: no sampling, replace-one neighbours: a local-DP release (any two updates of one client
  differ by up to 2S) or one epoch of shuffled DP-SGD. RDP: ``GaussianDpEvent(z / 2)``; PLD:
  ``GaussianDpEvent(z)``, because dp-accounting's PLD builds the factor 2 into REPLACE_ONE (it compares
  N(-S, .) with N(+S, .)) while its RDP Gaussian takes std / (largest change).

Rounds compose with ``SelfComposedDpEvent``; rounds of different specs with ``ComposedDpEvent``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import dp_accounting
from dp_accounting.privacy_accountant import NeighboringRelation

from hamrah.core.errors import ConfigError
from hamrah.core.numbers import check_number

SAMPLING_KINDS = ("poisson", "fixed", "none", "tree")


@dataclass(frozen=True)
class RoundSpec:
    """The mechanism of one round: noise multiplier z and how the participants were drawn.

    Attributes:
        noise_multiplier: z, noise std / clip norm on the sum of clipped updates.
        sampling: "poisson" | "fixed" | "none" (see the module docstring).
        sampling_probability: q for "poisson"; ignored otherwise.
        population: K for "fixed".
        cohort: m for "fixed".
        tree_size: k for "tree": rounds per tree (each client contributes at most once per tree).

    Raises:
        ConfigError: a value is out of range or missing for the sampling kind.
    """

    noise_multiplier: float
    sampling: str = "poisson"
    sampling_probability: float = 1.0
    population: int | None = None
    cohort: int | None = None
    tree_size: int | None = None

    def __post_init__(self) -> None:
        check_number("noise_multiplier", self.noise_multiplier, 0.0)
        if self.sampling not in SAMPLING_KINDS:
            raise ConfigError(f"sampling = {self.sampling!r}: expected one of {' | '.join(SAMPLING_KINDS)}")
        if self.sampling == "poisson" and not 0.0 < self.sampling_probability <= 1.0:
            raise ConfigError(f"sampling_probability = {self.sampling_probability!r}: expected 0 < q <= 1")
        if self.sampling == "fixed":
            k, m = self.population, self.cohort
            if not (isinstance(k, int) and isinstance(m, int) and 1 <= m <= k):
                raise ConfigError(f"population = {k!r}, cohort = {m!r}: expected integers with 1 <= m <= K")
        if self.sampling == "tree" and (
            isinstance(self.tree_size, bool) or not isinstance(self.tree_size, int) or self.tree_size < 1
        ):
            raise ConfigError(f"tree_size = {self.tree_size!r}: expected an integer >= 1 (rounds per tree)")

    @classmethod
    def poisson(cls, noise_multiplier: float, q: float) -> RoundSpec:
        """Return a Poisson-sampled round with sampling probability ``q``."""
        return cls(noise_multiplier, "poisson", q)

    @classmethod
    def fixed(cls, noise_multiplier: float, cohort: int, population: int) -> RoundSpec:
        """Return a round of ``cohort`` clients drawn without replacement from ``population``."""
        return cls(noise_multiplier, "fixed", cohort / population, population, cohort)

    @classmethod
    def tree(cls, noise_multiplier: float, tree_size: int) -> RoundSpec:
        """Return a DP-FTRL round: tree aggregation restarted every ``tree_size`` rounds, no sampling."""
        return cls(noise_multiplier, "tree", 1.0, tree_size=tree_size)

    @classmethod
    def unsampled(cls, noise_multiplier: float) -> RoundSpec:
        """Return an unsampled release under replace-one neighbours (local DP, a shuffled DP-SGD epoch)."""
        return cls(noise_multiplier, "none")

    @property
    def relation(self) -> NeighboringRelation:
        """Return the neighbouring relation the guarantee is stated for."""
        if self.sampling == "tree":
            return NeighboringRelation.REPLACE_SPECIAL
        return NeighboringRelation.ADD_OR_REMOVE_ONE if self.sampling == "poisson" else NeighboringRelation.REPLACE_ONE

    def with_noise(self, noise_multiplier: float) -> RoundSpec:
        """Return this spec with another noise multiplier."""
        return RoundSpec(
            noise_multiplier, self.sampling, self.sampling_probability, self.population, self.cohort, self.tree_size
        )

    def event(self, method: str = "rdp") -> dp_accounting.DpEvent:
        """Return the dp-accounting event of one round for the ``method`` accountant.

        Under replace-one the two accountants state sensitivity differently: RDP's multiplier is
        std / (largest change of the sum) = z / 2, while PLD's REPLACE_ONE Gaussian already compares
        the noise centred at -S and +S, so it takes std / S = z.
        """
        z = self.noise_multiplier
        if self.sampling == "tree":
            return tree_event(self, 1)
        if self.sampling == "poisson":
            return dp_accounting.PoissonSampledDpEvent(self.sampling_probability, dp_accounting.GaussianDpEvent(z))
        if self.sampling == "fixed":
            return dp_accounting.SampledWithoutReplacementDpEvent(
                self.population, self.cohort, dp_accounting.GaussianDpEvent(z / 2)
            )
        return dp_accounting.GaussianDpEvent(z if method == "pld" else z / 2)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RoundSpec:
        """Return the spec written by :meth:`to_dict`."""
        return cls(**d)


def tree_event(spec: RoundSpec, rounds: int) -> dp_accounting.DpEvent:
    """Return the event of the first ``rounds`` rounds of a DP-FTRL run (trees of ``spec.tree_size`` rounds)."""
    k, z = spec.tree_size, spec.noise_multiplier
    if k is None:
        raise ConfigError(f"tree_event: a {spec.sampling!r} round; expected a DP-FTRL round (RoundSpec.tree)")
    events = []
    if rounds // k:
        events.append(
            dp_accounting.SelfComposedDpEvent(dp_accounting.SingleEpochTreeAggregationDpEvent(z, k), rounds // k)
        )
    if rounds % k:
        events.append(dp_accounting.SingleEpochTreeAggregationDpEvent(z, rounds % k))
    return dp_accounting.ComposedDpEvent(events) if events else dp_accounting.NoOpDpEvent()


def _merge_trees(groups: Iterable[tuple[RoundSpec, int]]) -> list[tuple[RoundSpec, int]]:
    """Return ``groups`` with DP-FTRL rounds merged into one group (trees are counted from round 1).

    Raises:
        ConfigError: two different DP-FTRL specs in one budget (their trees would not line up).
    """
    groups = [(s, n) for s, n in groups if n > 0]
    trees = {s for s, _ in groups if s.sampling == "tree"}
    if not trees:
        return groups
    if len(trees) > 1:
        raise ConfigError(
            f"DP-FTRL rounds with different settings in one budget ({sorted(map(str, trees))}): "
            "expected one noise multiplier and tree size per run (trees count from round 1)"
        )
    return [(trees.pop(), sum(n for s, n in groups if s.sampling == "tree"))] + [
        (s, n) for s, n in groups if s.sampling != "tree"
    ]


def composed_event(groups: Iterable[tuple[RoundSpec, int]], method: str = "rdp") -> dp_accounting.DpEvent:
    """Return the event of ``count`` rounds of each spec, composed, for the ``method`` accountant."""
    events = [
        tree_event(s, n) if s.sampling == "tree" else dp_accounting.SelfComposedDpEvent(s.event(method), n)
        for s, n in _merge_trees(groups)
    ]
    return dp_accounting.ComposedDpEvent(events) if events else dp_accounting.NoOpDpEvent()
