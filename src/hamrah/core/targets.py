"""Rounds-to-target as McMahan et al. 2017 compute it."""

from __future__ import annotations

from collections.abc import Sequence


def rounds_to_target(rounds: Sequence[int], accuracies: Sequence[float], target: float) -> float | None:
    """Return the round at which accuracy first reaches ``target``, or None if it never does.

    The curve is first made monotone (best accuracy so far); the crossing is linearly interpolated
    between the last evaluation below the target and the first at or above it.

    Example:
        >>> rounds_to_target([1, 2, 3], [0.90, 0.96, 0.98], 0.97)
        2.5
    """
    best, prev_round, prev_best = float("-inf"), None, None
    for r, acc in zip(rounds, accuracies):
        best = max(best, acc)
        if best >= target:
            if prev_round is None or prev_best is None or best == prev_best:
                return float(r)
            return prev_round + (target - prev_best) / (best - prev_best) * (r - prev_round)
        prev_round, prev_best = r, best
    return None
