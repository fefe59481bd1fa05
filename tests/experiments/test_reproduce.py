"""`hamrah reproduce mcmahan`: every cell builds a valid config; the round cap the user asks for holds."""

from __future__ import annotations

import pytest

from hamrah.experiments.reproduce import CELLS, QUICK, cell_config, round_cap


@pytest.mark.parametrize("cell_id", sorted(CELLS))
def test_every_cell_builds_a_valid_capped_config(cell_id):
    cell = CELLS[cell_id]
    cfg = cell_config(cell, 7)
    assert cfg.run.rounds == 7
    assert cfg.run.target_accuracy == cell.target
    assert cfg.algorithm.name == cell.algorithm
    assert list(cfg.sweep.lrs) == list(cell.lrs)


def test_round_cap_is_the_factor_unless_max_rounds_is_given():
    lstm = CELLS["lstm-noniid-e1-b10"]  # paper: 164 rounds
    assert round_cap(lstm, 2.0) == 328
    assert round_cap(lstm, 0.01) == 10  # never fewer than 10
    assert round_cap(lstm, 2.0, max_rounds=600) == 600  # extends past the factor
    assert round_cap(lstm, 2.0, max_rounds=50) == 50
    assert set(QUICK) <= set(CELLS)
