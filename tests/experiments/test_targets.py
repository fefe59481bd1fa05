"""Rounds-to-target (McMahan et al.'s monotone, interpolated count) and the learning-rate grid."""

from __future__ import annotations

import itertools
import math

import pytest

from hamrah.experiments.targets import paper_grid, rounds_to_target


def test_docstring_example():
    assert rounds_to_target([1, 2, 3], [0.90, 0.96, 0.98], 0.97) == pytest.approx(2.5)


def test_never_reached():
    assert rounds_to_target([1, 2, 3], [0.5, 0.6, 0.7], 0.97) is None
    assert rounds_to_target([], [], 0.5) is None


def test_reached_at_first_eval():
    assert rounds_to_target([1, 2], [0.99, 0.5], 0.97) == 1.0
    assert rounds_to_target([5, 10], [0.97, 0.98], 0.97) == 5.0  # exactly at target counts


def test_exact_hit_later():
    assert rounds_to_target([1, 2, 3], [0.5, 0.97, 0.99], 0.97) == pytest.approx(2.0)


def test_non_monotone_uses_best_so_far():
    # Best-so-far curve: 0.5, 0.9, 0.9, 0.96 -> crossing between round 3 (0.9) and round 4 (0.96).
    r = rounds_to_target([1, 2, 3, 4], [0.5, 0.9, 0.8, 0.96], 0.95)
    assert r == pytest.approx(3 + (0.95 - 0.9) / (0.96 - 0.9))
    # A dip after reaching the target does not matter.
    assert rounds_to_target([1, 2, 3], [0.96, 0.5, 0.2], 0.95) == 1.0


def test_eval_every_gaps_interpolate():
    assert rounds_to_target([5, 10, 15], [0.80, 0.90, 1.00], 0.95) == pytest.approx(12.5)
    assert rounds_to_target([10, 20], [0.5, 1.0], 0.6) == pytest.approx(12.0)


def test_result_is_between_bracketing_rounds():
    rounds = [2, 4, 6, 8]
    accs = [0.1, 0.4, 0.45, 0.9]
    for target in (0.2, 0.42, 0.5, 0.89):
        r = rounds_to_target(rounds, accs, target)
        i = next(i for i, a in enumerate(accs) if a >= target)
        assert rounds[i - 1] < r <= rounds[i]


def test_paper_grid():
    g = paper_grid(0.01, 1, 3)
    assert len(g) == 7
    assert g[0] == pytest.approx(0.01) and g[-1] == pytest.approx(1.0)
    for a, b in itertools.pairwise(g):
        assert b / a == pytest.approx(10 ** (1 / 3), rel=1e-4)
    assert len(paper_grid(0.01, 1, 6)) == 13
    assert paper_grid(0.1, 0.1, 3) == [0.1]
    g = paper_grid(0.02, 0.5, 3)  # does not pass lr_max
    assert g[-1] <= 0.5 and g[-1] * 10 ** (1 / 3) > 0.5
    assert all(math.isfinite(x) and x > 0 for x in g)
