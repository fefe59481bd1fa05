"""Learning-rate grids; rounds-to-target lives in :mod:`hamrah.core.targets` (the server uses it too)."""

from __future__ import annotations

from hamrah.core.targets import rounds_to_target

__all__ = ["paper_grid", "rounds_to_target"]


def paper_grid(lr_min: float, lr_max: float, per_decade: int = 3) -> list[float]:
    """Return the multiplicative learning-rate grid lr_min * 10^(i/per_decade) up to lr_max."""
    import math

    steps = int(math.floor(per_decade * math.log10(lr_max / lr_min) + 1e-9))
    return [round(lr_min * 10 ** (i / per_decade), 6) for i in range(steps + 1)]
