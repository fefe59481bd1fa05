"""Norm bounding with optional weak differential privacy (Sun et al. 2019, *Can You Really Backdoor
Federated Learning?*)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hamrah.aggregation.base import as_weights, finite_rows, flatten, unflatten
from hamrah.core.errors import ConfigError
from hamrah.core.numbers import check_number
from hamrah.core.params import Params


@dataclass(frozen=True)
class NormBound:
    """Scale every delta to L2 norm at most ``bound``, take the weighted mean, then add
    N(0, noise_std^2) to each coordinate of the result (weak DP; 0 = no noise).

    Not a breakdown-point defence: it caps each client's pull at ``w_k * bound``, which blunts boosted
    (scaled) updates such as model replacement, not small well-placed ones.
    Promise (tested over arbitrary finite inputs): without noise, the result's L2 norm is at most
    ``bound`` (a weighted mean of vectors of norm <= bound), whatever the attackers send. Non-finite
    deltas are dropped first (their weight with them).

    Args:
        bound: M, the largest L2 norm a client's delta keeps.
        noise_std: sigma of the Gaussian noise added to the aggregate.
        generator: the seeded torch generator the noise is drawn from (required when noise_std > 0).

    Example:
        >>> import torch
        >>> NormBound(1.0)([{"w": torch.tensor([3.0, 4.0])}, {"w": torch.tensor([0.0, 0.5])}], [1, 1])["w"]
        tensor([0.3000, 0.6500])
    """

    bound: float
    noise_std: float = 0.0
    generator: torch.Generator | None = None
    name: str = "norm_bound"

    def __post_init__(self) -> None:
        check_number(f"aggregator {self.name}: bound", self.bound, 0.0, open_low=True)
        check_number(f"aggregator {self.name}: noise_std", self.noise_std, 0.0)
        if self.noise_std > 0 and self.generator is None:
            raise ConfigError(f"aggregator {self.name}: noise_std = {self.noise_std} needs a seeded torch.Generator")

    def check(self, cohort_size: int) -> None:
        """Accept any cohort of at least one client."""

    def tolerance(self, cohort_size: int) -> None:
        """None: the norm promise holds whatever and however many attackers send."""
        return None

    def __call__(self, deltas: list[Params], weights: list[float]) -> Params:
        x, spec = flatten(deltas)
        x, w = finite_rows(x, as_weights(weights, len(deltas)))
        xd = x.double()  # a float32 norm of values near 3e38 would overflow
        norms = xd.norm(dim=1, keepdim=True)
        clipped = xd * (self.bound / norms.clamp(min=1e-12)).clamp(max=1.0)
        out = (w.double() @ clipped).float()
        if self.noise_std > 0:
            out = out + self.noise_std * torch.randn(out.shape, generator=self.generator, dtype=out.dtype)
        return unflatten(out, spec)
