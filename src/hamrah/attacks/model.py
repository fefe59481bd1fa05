"""Model poisoning: the malicious clients send something other than what they trained.

- :class:`SignFlip` and :class:`ScaleUpdate`: -s * delta and s * delta (Fang et al. 2020 and
  Bhagoji et al. 2019 use both as baselines).
- :class:`GaussianUpdate`: a draw of N(0, std^2) per coordinate (the "Gaussian" Byzantine client of
  Blanchard et al. 2017).
- :class:`LittleIsEnough`: Baruch et al. 2019, *A Little Is Enough: Circumventing Defenses For
  Distributed Learning*: every attacker sends mu - z_max * sigma, from the benign updates'
  coordinate-wise mean and standard deviation.
- :class:`ModelReplacement`: Bagdasaryan et al. 2020, *How To Backdoor Federated Learning*: boost the
  (backdoor-trained) delta by gamma so that the weighted mean is replaced by it.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
import torch

from hamrah.algorithms.base import ClientResult
from hamrah.core.numbers import check_number
from hamrah.core.params import Params


def _with_delta(result: ClientResult, delta: Params) -> ClientResult:
    return dataclasses.replace(result, delta=delta)


def _scaled(results: list[ClientResult], factor: float) -> list[ClientResult]:
    return [_with_delta(r, {k: factor * v for k, v in r.delta.items()}) for r in results]


@dataclass(frozen=True)
class SignFlip:
    """Send -scale * delta: the honest step, reversed.

    Example:
        >>> import torch
        >>> r = ClientResult(0, {"w": torch.tensor([1.0, -2.0])}, 10)
        >>> SignFlip(2.0).poison([r], [], None)[0].delta["w"].tolist()
        [-2.0, 4.0]
    """

    scale: float = 1.0

    def __post_init__(self) -> None:
        check_number("attack sign_flip: scale", self.scale, 0.0, open_low=True)

    def poison(self, malicious: list[ClientResult], benign: list[ClientResult], rng) -> list[ClientResult]:
        """Return the malicious results with their deltas negated and scaled."""
        return _scaled(malicious, -self.scale)


@dataclass(frozen=True)
class ScaleUpdate:
    """Send factor * delta (a boosted honest update; factor < 1 shrinks it)."""

    factor: float = 10.0

    def __post_init__(self) -> None:
        check_number("attack scale: factor", self.factor, 0.0, open_low=True)

    def poison(self, malicious: list[ClientResult], benign: list[ClientResult], rng) -> list[ClientResult]:
        """Return the malicious results with their deltas multiplied by ``factor``."""
        return _scaled(malicious, self.factor)


@dataclass(frozen=True)
class GaussianUpdate:
    """Send pure noise: each coordinate drawn from N(0, std^2), independently per attacker."""

    std: float = 1.0

    def __post_init__(self) -> None:
        check_number("attack gaussian: std", self.std, 0.0, open_low=True)

    def poison(
        self, malicious: list[ClientResult], benign: list[ClientResult], rng: np.random.Generator
    ) -> list[ClientResult]:
        """Return the malicious results with noise deltas drawn from a torch generator seeded by ``rng``."""
        gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
        return [
            _with_delta(
                r, {k: self.std * torch.randn(v.shape, generator=gen, dtype=v.dtype) for k, v in r.delta.items()}
            )
            for r in malicious
        ]


def z_max(n: int, m: int) -> float:
    """Return Baruch et al.'s z_max for ``n`` clients of which ``m`` are malicious.

    s = floor(n/2 + 1) - m is the number of benign clients the attackers need on their side to form a
    majority; z_max = Phi^-1((n - s) / n), capped where that share reaches 1.

    Example:
        >>> round(z_max(50, 24), 2)  # the paper's n = 50, m = 24 (s = 2)
        1.75
    """
    s = math.floor(n / 2 + 1) - m
    p = min((n - s) / n, 1 - 1e-6)
    return NormalDist().inv_cdf(p)


@dataclass(frozen=True)
class LittleIsEnough:
    """Every attacker sends mu - z * sigma (coordinate-wise over the benign deltas of the round).

    Args:
        z: the shift in standard deviations; None = the paper's z_max for this round's n and m.

    The shift stays within the benign spread, so distance- and median-based rules keep it. With
    fewer than two benign results the attackers use their own honest updates for the statistics.
    """

    z: float | None = None

    def __post_init__(self) -> None:
        if self.z is not None:
            check_number("attack alie: z", self.z, 0.0)

    def poison(self, malicious: list[ClientResult], benign: list[ClientResult], rng) -> list[ClientResult]:
        """Return the malicious results all carrying the same crafted delta."""
        ref = [r for r in benign if r.error is None and r.delta] or []
        if len(ref) < 2:
            ref = malicious + ref
        z = self.z if self.z is not None else z_max(len(malicious) + len(benign), len(malicious))
        crafted = {}
        for k in malicious[0].delta:
            stacked = torch.stack([r.delta[k] for r in ref])
            sigma = stacked.std(0, unbiased=False) if len(ref) > 1 else torch.zeros_like(stacked[0])
            crafted[k] = stacked.mean(0) - z * sigma
        return [_with_delta(r, {k: v.clone() for k, v in crafted.items()}) for r in malicious]


@dataclass(frozen=True)
class ModelReplacement:
    """Boost the malicious deltas by gamma so that the aggregate becomes their (backdoored) mean.

    Bagdasaryan et al. scale X - G by gamma = n / eta for a server that averages n updates with
    learning rate eta. Under FedAvg's n_k-weighted mean (eta = 1) the matching estimate is
    gamma = (sum of all weights) / (sum of the malicious weights), used when ``boost`` is None.
    Pair it with a :class:`~hamrah.attacks.PixelBackdoor` data poisoning so that X carries the backdoor.

    Example:
        >>> import torch
        >>> mal = [ClientResult(0, {"w": torch.tensor([1.0])}, 10)]
        >>> ben = [ClientResult(1, {"w": torch.tensor([0.0])}, 30)]
        >>> ModelReplacement().poison(mal, ben, None)[0].delta["w"].tolist()
        [4.0]
    """

    boost: float | None = None

    def __post_init__(self) -> None:
        if self.boost is not None:
            check_number("attack model_replacement: boost", self.boost, 0.0, open_low=True)

    def poison(self, malicious: list[ClientResult], benign: list[ClientResult], rng) -> list[ClientResult]:
        """Return the malicious results with deltas multiplied by gamma."""
        if self.boost is not None:
            return _scaled(malicious, self.boost)
        ok = [r for r in benign if r.error is None]
        mal_w = sum(r.num_examples for r in malicious)
        gamma = (mal_w + sum(r.num_examples for r in ok)) / max(mal_w, 1)
        return _scaled(malicious, gamma)
