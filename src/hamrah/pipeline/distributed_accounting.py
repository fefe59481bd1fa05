"""The accountant of distributed DP: what one DDG round releases, its Rényi DP, and the server's ledger.

The mechanism is the distributed discrete Gaussian stage of :mod:`hamrah.pipeline.distributed`
(Kairouz, Liu, Steinke 2021), charged as a sum of exactly n_min clients' noise.

**Accounting** (Rényi DP, add/remove one client; :class:`DistributedRound`):

- sensitivity: Delta_2 = min(c/gamma + sqrt(d'), sqrt((c/gamma)^2 + d'/4 + sqrt(2 log(1/beta)) (c/gamma +
  sqrt(d')/2))) in ring units, enforced by the conditional rounding (Proposition 22), and
  Delta_1 = Delta_2 min(sqrt(d'), Delta_2);
- one sum of n discrete Gaussians of variance s^2 = (sigma/gamma)^2 each (Theorem 1, Proposition 14):
  eps(alpha) = min(alpha/2 l2^2 + tau d', alpha/2 (l2^2 + 2 l1 tau + tau^2 d'), alpha/2 (l2 + sqrt(d') tau)^2),
  l_p = Delta_p / (sqrt(n) s), tau = 10 sum_{k=1}^{n-1} exp(-2 pi^2 s^2 k / (k + 1));
- Poisson sampling with rate q: the general upper bound for Poisson-subsampled RDP of Zhu and Wang
  2019 (*Poisson Subsampled Rényi Differential Privacy*, ICML), at integer orders 2..256;
- rounds compose additively in RDP; (epsilon, delta) by dp-accounting's RDP conversion (``compute_epsilon``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from dp_accounting.rdp.rdp_privacy_accountant import compute_epsilon
from scipy import special

from hamrah.core.errors import ConfigError, DataError
from hamrah.secagg import ddg

ORDERS = tuple(range(2, 129)) + (256,)
"""Integer Rényi orders (the subsampling bound needs integers)."""


@dataclass(frozen=True)
class DistributedRound:
    """The mechanism one round releases: a Poisson-sampled sum of at least n_min DDG-noised clients.

    Attributes:
        params: the ring settings (clip, gamma, local noise, ring bits, beta, dimension).
        min_contributors: n_min, the fewest clients whose noise is in any released sum.
        sampling_probability: q, each client's chance to be in the round (1: no sampling).
    """

    params: ddg.DDGParams
    min_contributors: int
    sampling_probability: float = 1.0

    def __post_init__(self) -> None:
        if (
            isinstance(self.min_contributors, bool)
            or not isinstance(self.min_contributors, int)
            or self.min_contributors < 1
        ):
            raise ConfigError(f"min_contributors = {self.min_contributors!r}: expected a positive integer")
        if not 0 < self.sampling_probability <= 1:
            raise ConfigError(f"sampling_probability = {self.sampling_probability!r}: expected a number in (0, 1]")

    def scales(self) -> tuple[float, float, float]:
        """Return (l1 scale, l2 scale, tau) of Kairouz et al.'s Theorem 1 for this round."""
        p, n = self.params, self.min_contributors
        s = p.local_stddev / p.gamma
        if s == 0:
            return math.inf, math.inf, 0.0
        l2 = p.l2_bound
        l1 = l2 * min(math.sqrt(p.padded_dim), l2)
        tau = 10 * sum(math.exp(-2 * (math.pi * s) ** 2 * k / (k + 1)) for k in range(1, n))
        return l1 / (math.sqrt(n) * s), l2 / (math.sqrt(n) * s), tau

    def unsampled_rdp(self, order: int) -> float:
        """Return eps(alpha) of one unsampled round (Proposition 14 with Theorem 1's tau)."""
        return float(self._curve()(np.array([order], dtype=np.float64))[0])

    def _curve(self) -> Callable[[np.ndarray], np.ndarray]:
        l1, l2, tau = self.scales()
        d = self.params.padded_dim

        def eps(orders: np.ndarray) -> np.ndarray:
            a = orders / 2
            out: np.ndarray = np.minimum(
                np.minimum(a * l2**2 + tau * d, a * (l2**2 + 2 * l1 * tau + tau**2 * d)),
                a * (l2 + math.sqrt(d) * tau) ** 2,
            )
            return out

        return eps

    def rdp(self, orders: Sequence[int] = ORDERS) -> np.ndarray:
        """Return the RDP of one (sampled) round at ``orders``."""
        q, eps = self.sampling_probability, self._curve()
        plain = eps(np.asarray(orders, dtype=np.float64))
        if q == 1:
            return plain
        out: np.ndarray = np.minimum(np.array([_poisson_subsampled(a, q, eps) for a in orders]), plain)
        return out


def _poisson_subsampled(order: int, q: float, eps: Callable[[np.ndarray], np.ndarray]) -> float:
    """Zhu and Wang 2019's upper bound on the RDP at integer ``order`` of a Poisson(q)-subsampled mechanism.

    ``eps`` maps an array of orders to the unsampled mechanism's RDP at each.
    """
    e2 = float(np.asarray(eps(np.array([2.0])))[0])
    if math.isinf(e2):
        return math.inf
    j = np.arange(3, order + 1, dtype=np.float64)
    log_binom = special.gammaln(order + 1) - special.gammaln(j + 1) - special.gammaln(order - j + 1)
    terms = np.concatenate(
        [[0.0, e2], (j - 1) * np.asarray(eps(j)) + log_binom + (order - j) * math.log1p(-q) + j * math.log(q)]
    )
    coeff = np.concatenate(
        [
            [(1 - q) ** (order - 1) * (order * q - q + 1), special.comb(order, 2) * q**2 * (1 - q) ** (order - 2)],
            np.full(len(j), 3.0),
        ]
    )
    return float(special.logsumexp(terms, b=coeff)) / (order - 1)


class DistributedAccountant:
    """Epsilon of the DDG rounds run so far (same interface as :class:`hamrah.privacy.PrivacyAccountant`).

    Args:
        spec: the round's mechanism.
    """

    def __init__(self, spec: DistributedRound):
        self.spec, self.rounds = spec, 0
        self._rdp = spec.rdp(ORDERS)

    def step(self, rounds: int = 1) -> None:
        """Charge ``rounds`` more rounds."""
        self.rounds += int(rounds)

    def epsilon(self, delta: float, extra_rounds: int = 0) -> float:
        """Return epsilon at ``delta`` after the rounds so far plus ``extra_rounds``."""
        rounds = self.rounds + extra_rounds
        if rounds == 0:
            return 0.0
        return float(compute_epsilon(ORDERS, self._rdp * rounds, delta)[0])


LEDGER_FORMAT = "hamrah-ddg-ledger"


def ledger_to_dict(accountant: DistributedAccountant, delta: float) -> dict[str, Any]:
    """Return what a server keeps of a DDG accountant with its checkpoints (the mechanism and the rounds charged)."""
    return {
        "format": LEDGER_FORMAT,
        "version": 1,
        "delta": float(delta),
        "mechanism": asdict(accountant.spec),
        "rounds_done": accountant.rounds,
        "spent_epsilon": accountant.epsilon(delta),
    }


def restore_ledger(accountant: DistributedAccountant, d: Mapping[str, Any], delta: float, source: str) -> None:
    """Set ``accountant``'s rounds from :func:`ledger_to_dict`'s dict.

    Raises:
        DataError: the entry is not a DDG ledger, is malformed, or its epsilon disagrees with its rounds.
        ConfigError: it was written for another mechanism or delta (a new budget needs a new state folder).
    """
    if not isinstance(d, dict) or d.get("format") != LEDGER_FORMAT or d.get("version") != 1:
        raise DataError(
            f"{source}: the privacy ledger is not a distributed-DP ledger (format {LEDGER_FORMAT!r}); "
            "expected the entry this server wrote"
        )
    saved, want = d.get("mechanism"), json.loads(json.dumps(asdict(accountant.spec)))
    if saved != want or d.get("delta") != float(delta):
        raise ConfigError(
            f"{source}: the saved distributed-DP mechanism or delta differs from the configured one; "
            "expected the same (a new budget needs a new --state)"
        )
    rounds = d.get("rounds_done")
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 0:
        raise DataError(f"{source}: corrupt privacy ledger: rounds_done = {rounds!r}, expected an integer >= 0")
    accountant.rounds = rounds
    if not math.isclose(accountant.epsilon(delta), float(d.get("spent_epsilon", -1.0)), rel_tol=1e-6, abs_tol=1e-9):
        raise DataError(
            f"{source}: corrupt privacy ledger: stored spent epsilon {d.get('spent_epsilon')!r} but "
            f"{rounds} rounds give {accountant.epsilon(delta):.6g}"
        )


__all__ = [
    "LEDGER_FORMAT",
    "ORDERS",
    "DistributedAccountant",
    "DistributedRound",
    "ledger_to_dict",
    "restore_ledger",
]
