"""Model poisoning built against the robust rules: it reads the round's benign updates and crafts the
malicious ones so that the defence keeps them.

- :class:`MinMax` and :class:`MinSum`: Shejwalkar & Houmansadr 2021, *Manipulating the Byzantine:
  Optimizing Model Poisoning Attacks and Defenses for Federated Learning* (NDSS), the AGR-agnostic
  attacks: m = mu + gamma * p, with gamma as large as keeps m no farther from the benign updates than
  they are from each other (min-max: the largest distance; min-sum: the sum of squared distances).
- :class:`InnerProduct`: Xie, Koyejo & Gupta 2020, *Fall of Empires: Breaking Byzantine-tolerant SGD
  by Inner Product Manipulation* (UAI): every attacker sends -epsilon * mu.
- :class:`FangTrim` and :class:`FangKrum`: Fang, Cao, Jia & Gong 2020, *Local Model Poisoning Attacks
  to Byzantine-Robust Federated Learning* (USENIX Security), full-knowledge attacks on the
  trimmed mean / median and on Krum.
- :class:`FLTrustAdaptive`: an attack adapted to FLTrust (Cao et al. 2021): keep a chosen positive
  cosine with the attacker's estimate of the server update and spend the rest along a harmful
  orthogonal direction (FLTrust rescales every update to ||g_0||, so only direction matters).

All of them are omniscient in the usual way of the reference implementations: they read the round's
benign deltas (mu, sigma, the extremes). With fewer than two benign results they use the malicious
clients' own honest updates. Every attacker of a round sends the same crafted delta (Fang's Krum
attack: the same one, so that they vouch for each other).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import torch

from hamrah.aggregation import flatten, unflatten
from hamrah.aggregation.krum import krum_scores_from, squared_distances
from hamrah.algorithms.base import ClientResult
from hamrah.core.errors import ConfigError
from hamrah.core.numbers import check_number

_PERTURBATIONS = ("std", "unit", "sign")


def reference_matrix(malicious: list[ClientResult], benign: list[ClientResult]) -> tuple[torch.Tensor, list]:
    """Return the ``[n, D]`` benign deltas the attacker reads (its own honest ones if fewer than two
    benign reported) in float64, and the spec to unflatten a crafted row."""
    ref = [r for r in benign if r.error is None and r.delta]
    if len(ref) < 2:
        ref = list(malicious) + ref
    x, spec = flatten([r.delta for r in ref])
    return x.double(), spec


def _send(malicious: list[ClientResult], row: torch.Tensor, spec: list) -> list[ClientResult]:
    crafted = unflatten(row, spec)
    return [dataclasses.replace(r, delta={k: v.clone() for k, v in crafted.items()}) for r in malicious]


def perturbation(x: torch.Tensor, kind: str) -> torch.Tensor:
    """Return Shejwalkar & Houmansadr's perturbation p for the benign rows ``x``: ``std`` = -sigma,
    ``unit`` = -mu / ||mu||, ``sign`` = -sign(mu) (coordinate-wise over the rows)."""
    mu = x.mean(0)
    if kind == "std":
        return -x.std(0, unbiased=False) if x.shape[0] > 1 else -mu.abs()
    if kind == "unit":
        return -mu / mu.norm().clamp(min=1e-30)
    return -torch.sign(mu)


def largest_gamma(ok, gamma_init: float = 10.0, tau: float = 1e-5) -> float:
    """Return the largest gamma in (0, 2 gamma_init) with ``ok(gamma)``, to within ``tau``, by
    Shejwalkar & Houmansadr's halving search (Algorithm 1): from gamma_init, step up while it holds,
    down while not, halving the step each time. 0 when no gamma tried holds."""
    gamma, step, good = gamma_init, gamma_init / 2, 0.0
    while step > tau:
        if ok(gamma):
            good = gamma
            gamma += step
        else:
            gamma -= step
        step /= 2
    return good


@dataclass(frozen=True)
class MinMax:
    """Min-max (Shejwalkar & Houmansadr 2021): m = mu + gamma p with the largest gamma such that
    max_i ||m - b_i|| <= max_{i,j} ||b_i - b_j|| over the benign b.

    Example:
        >>> b = [ClientResult(i, {"w": torch.tensor([float(i), 1.0])}, 1) for i in range(3)]
        >>> out = MinMax("unit").poison([ClientResult(9, {"w": torch.zeros(2)}, 1)], b, None)[0].delta["w"]
        >>> bool(max((out - r.delta["w"]).norm() for r in b) <= 2.0 + 1e-4)
        True
    """

    perturbation: str = "std"
    gamma_init: float = 10.0
    name = "min_max"

    def __post_init__(self) -> None:
        _kind(self.name, self.perturbation)
        check_number(f"attack {self.name}: gamma_init", self.gamma_init, 0.0, open_low=True)

    def poison(self, malicious: list[ClientResult], benign: list[ClientResult], rng) -> list[ClientResult]:
        """Return the malicious results all carrying the crafted delta."""
        x, spec = reference_matrix(malicious, benign)
        mu, p = x.mean(0), perturbation(x, self.perturbation)
        limit = torch.cdist(x, x).max()
        gamma = largest_gamma(lambda g: bool((x - (mu + g * p)).norm(dim=1).max() <= limit), self.gamma_init)
        return _send(malicious, mu + gamma * p, spec)


@dataclass(frozen=True)
class MinSum:
    """Min-sum (Shejwalkar & Houmansadr 2021): m = mu + gamma p with the largest gamma such that
    sum_i ||m - b_i||^2 <= max_i sum_j ||b_i - b_j||^2 over the benign b."""

    perturbation: str = "std"
    gamma_init: float = 10.0
    name = "min_sum"

    def __post_init__(self) -> None:
        _kind(self.name, self.perturbation)
        check_number(f"attack {self.name}: gamma_init", self.gamma_init, 0.0, open_low=True)

    def poison(self, malicious: list[ClientResult], benign: list[ClientResult], rng) -> list[ClientResult]:
        """Return the malicious results all carrying the crafted delta."""
        x, spec = reference_matrix(malicious, benign)
        mu, p = x.mean(0), perturbation(x, self.perturbation)
        limit = (torch.cdist(x, x) ** 2).sum(1).max()
        gamma = largest_gamma(lambda g: bool(((x - (mu + g * p)).norm(dim=1) ** 2).sum() <= limit), self.gamma_init)
        return _send(malicious, mu + gamma * p, spec)


def _kind(name: str, kind: object) -> None:
    if kind not in _PERTURBATIONS:
        raise ConfigError(f"attack {name}: perturbation = {kind!r}: expected one of {', '.join(_PERTURBATIONS)}")


@dataclass(frozen=True)
class InnerProduct:
    """IPM (Xie et al. 2020): every attacker sends -epsilon * mu, so that the aggregate's inner product
    with the true mean turns negative. A small epsilon keeps the crafted update near the honest ones
    (distance-based rules such as Krum keep it); a large one dominates a mean. The default 0.1 is the
    small case.

    Example:
        >>> b = [ClientResult(1, {"w": torch.tensor([2.0, -4.0])}, 1)]
        >>> InnerProduct(0.5).poison([ClientResult(0, {"w": torch.zeros(2)}, 1)], b, None)[0].delta["w"].tolist()
        [-1.0, 2.0]
    """

    epsilon: float = 0.1
    name = "ipm"

    def __post_init__(self) -> None:
        check_number(f"attack {self.name}: epsilon", self.epsilon, 0.0, open_low=True)

    def poison(self, malicious: list[ClientResult], benign: list[ClientResult], rng) -> list[ClientResult]:
        """Return the malicious results all carrying -epsilon times the benign mean."""
        ref = [r for r in benign if r.error is None and r.delta] or list(malicious)
        x, spec = flatten([r.delta for r in ref])
        return _send(malicious, -self.epsilon * x.double().mean(0), spec)


@dataclass(frozen=True)
class FangTrim:
    """Fang et al. 2020's full-knowledge attack on the trimmed mean and the median.

    Per coordinate j, s_j = sign of the benign mean (the direction the model would move). Each attacker
    sends a value beyond the benign extreme on the other side: for s_j > 0, drawn uniformly from
    [w_min / b, w_min] when w_min > 0 and from [b w_min, w_min] otherwise; for s_j <= 0, from
    [w_max, b w_max] when w_max > 0 and from [w_max / b, w_max] otherwise (b = 2 in the paper).
    """

    b: float = 2.0
    name = "fang_trim"

    def __post_init__(self) -> None:
        check_number(f"attack {self.name}: b", self.b, 1.0, open_low=True)

    def poison(
        self, malicious: list[ClientResult], benign: list[ClientResult], rng: np.random.Generator
    ) -> list[ClientResult]:
        """Return the malicious results, each with its own draw in the ranges above."""
        x, spec = reference_matrix(malicious, benign)
        up = x.mean(0) > 0
        lo_ext, hi_ext = x.min(0).values, x.max(0).values
        # s > 0: push below the minimum; s <= 0: push above the maximum
        lo = torch.where(up, torch.where(lo_ext > 0, lo_ext / self.b, lo_ext * self.b), hi_ext)
        hi = torch.where(up, lo_ext, torch.where(hi_ext > 0, hi_ext * self.b, hi_ext / self.b))
        gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
        out = []
        for r in malicious:
            u = torch.rand(x.shape[1], generator=gen, dtype=torch.float64)
            out.append(_send([r], lo + u * (hi - lo), spec)[0])
        return out


@dataclass(frozen=True)
class FangKrum:
    """Fang et al. 2020's full-knowledge attack on Krum: every attacker sends -lambda * s, where s is the
    sign of the benign mean, with the largest lambda (halved from the paper's upper bound, down to
    ``threshold``) for which Krum, assuming f = the round's attackers, selects a crafted update.
    Copies of one crafted update are at distance 0 from each other, which is what lowers their score.
    """

    threshold: float = 1e-5
    name = "fang_krum"

    def __post_init__(self) -> None:
        check_number(f"attack {self.name}: threshold", self.threshold, 0.0, open_low=True)

    def poison(self, malicious: list[ClientResult], benign: list[ClientResult], rng) -> list[ClientResult]:
        """Return the malicious results all carrying -lambda * s."""
        x, spec = reference_matrix(malicious, benign)
        c, n = len(malicious), x.shape[0]
        s = torch.sign(x.mean(0))
        # distances once: benign-benign from the Gram matrix, crafted-benign in closed form
        # ||-lam s - x_i||^2 = lam^2 ||s||^2 + 2 lam s.x_i + ||x_i||^2; the c copies are at distance 0
        d2 = torch.zeros(c + n, c + n, dtype=torch.float64)
        d2[c:, c:] = squared_distances(x)
        ss, sx, xx = float(s @ s), x @ s, (x * x).sum(1)
        lam = upper_lambda(x, c)
        while lam > self.threshold:
            d2[:c, c:] = (lam * lam * ss + 2 * lam * sx + xx).clamp(min=0)
            d2[c:, :c] = d2[:c, c:].t()
            if int(krum_scores_from(d2, c).argmin()) < c:
                break
            lam /= 2
        return _send(malicious, -lam * s, spec)


def upper_lambda(x: torch.Tensor, c: int) -> float:
    """Return Fang et al.'s upper bound on lambda for ``c`` attackers among ``c + len(x)`` clients:
    min_i (sum of distances to its m - 2c - 1 nearest benign) / ((m - 2c - 1) sqrt d) + max_i ||x_i|| / sqrt d
    (the global model is the origin of a delta)."""
    n, d = x.shape
    m = n + c
    k = max(m - 2 * c - 1, 1)
    dist = torch.cdist(x, x).sort(1).values[:, 1 : k + 1]
    return float(dist.sum(1).min() / (k * math.sqrt(d)) + x.norm(dim=1).max() / math.sqrt(d))


@dataclass(frozen=True)
class FLTrustAdaptive:
    """An attack adapted to FLTrust (Cao et al. 2021), whose update counts with weight ReLU(cos(g, g_0))
    after rescaling to ||g_0||: every attacker sends a unit vector with cosine ``cosine`` to its
    estimate of g_0 (the benign mean; FLTrust's root set is clean data from the same distribution)
    and the rest along the part of -sign(mu) orthogonal to mu (the direction Fang's attacks push every
    coordinate), scaled to the benign mean norm. Its weighted pull orthogonal to g_0 is
    cos * sin, largest at cos = 1/sqrt(2); a smaller cosine halves trust, a negative one gets 0.
    Cao et al.'s own adaptive attack optimises the crafted update with gradient steps through the
    rule; this one is a closed form of the same idea.
    """

    cosine: float = 0.7
    name = "fltrust_adaptive"

    def __post_init__(self) -> None:
        check_number(f"attack {self.name}: cosine", self.cosine, 0.0, 1.0, open_low=True)

    def poison(self, malicious: list[ClientResult], benign: list[ClientResult], rng) -> list[ClientResult]:
        """Return the malicious results all carrying the crafted delta."""
        x, spec = reference_matrix(malicious, benign)
        mu = x.mean(0)
        u = mu / mu.norm().clamp(min=1e-30)
        q = -torch.sign(mu)
        q = q - (q @ u) * u
        q = q / q.norm().clamp(min=1e-30)
        row = mu.norm() * (self.cosine * u + math.sqrt(1 - self.cosine**2) * q)
        return _send(malicious, row, spec)
