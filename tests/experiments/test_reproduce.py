"""`hamrah reproduce mcmahan`: every cell builds a valid config; the round cap the user asks for holds."""

from __future__ import annotations

import json
from dataclasses import asdict

import pytest

from hamrah.experiments.reproduce import CELLS, QUICK, TABLE1, cell_config, round_cap, table1_markdown
from hamrah.experiments.sweep import SweepPoint, next_rate


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


def test_table1_has_every_2nn_cell_the_paper_ran():
    ran = {(c.partition, c.batch_size, c.client_fraction): c for c in TABLE1}
    assert len(ran) == 16  # 5 Cs at B = 10 and 3 at B = inf, for IID and non-IID
    assert ran[("shards", 10, 1.0)].paper_rounds == 380
    assert ran[("iid", None, 0.0)].paper_rounds == 1455
    assert ("iid", None, 0.5) not in ran  # "-" in the paper
    assert ran[("iid", 10, 0.1)].id == "2nn-iid-e1-b10"  # the C = 0.1 ids are the older cells'
    assert all(c.id in CELLS and c.model == "2nn" and c.epochs == 1 for c in TABLE1)


def _row(cell_id: str, rounds: float | None) -> dict:
    """A row as ``reproduce_cell`` writes it."""
    c = CELLS[cell_id]
    return {
        **{k: v for k, v in asdict(c).items() if k != "lrs"},
        "rounds_to_target": rounds,
        "ratio_to_paper": None if rounds is None else rounds / c.paper_rounds,
        "best_lr": c.lrs[0],
        "best_accuracy": 0.97,
        "max_rounds": 100,
        "wall_s": 1.0,
    }


def test_table1_markdown_lays_out_the_paper_and_hamrah_with_speedups_over_c0():
    text = table1_markdown(
        [_row("2nn-iid-e1-b10-c0", 100.0), _row("2nn-iid-e1-b10-c0.2", 40.0), _row("2nn-noniid-e1-b10-c1", None)]
    )
    lines = text.splitlines()
    assert lines[0].startswith("| C | 2NN IID B=10: paper | hamrah | 2NN IID B=inf: paper")
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ")[1:] for line in lines[2:]}
    assert set(rows) == {"0", "0.1", "0.2", "0.5", "1"}
    assert rows["0"][:2] == ["316.0", "100.0"]
    assert rows["0.2"][:2] == ["77.0 (4.1x)", "40.0 (2.5x)"]  # 316 / 77 and 100 / 40
    assert rows["0.1"][1] == "not run"
    assert rows["1"][4:6] == ["380.0 (8.6x)", "not reached"]
    assert rows["0.5"][2:4] == ["-", "-"]  # IID B = inf at C = 0.5: not in the paper


def _point(lr: float, rounds: float | None) -> SweepPoint:
    return SweepPoint(lr, rounds, 0.9, 0.9, 10, 1.0, ((), ()))


def test_a_sweep_widens_one_grid_step_past_the_edge_holding_the_best_rate():
    assert next_rate([_point(0.1, 50.0), _point(0.215, 40.0), _point(0.464, 30.0)]) == 1.0
    assert next_rate([_point(0.1, 20.0), _point(0.215, 40.0), _point(0.464, None)]) == 0.0464
    assert next_rate([_point(0.1, 50.0), _point(0.215, 30.0), _point(0.464, 40.0)]) is None  # inside
    assert next_rate([_point(0.1, None), _point(0.215, None)]) is None  # nothing reached the target
    assert next_rate([_point(0.215, 30.0)]) is None  # one rate: no step to take


def test_render_writes_one_report_of_earlier_runs_the_later_file_winning(tmp_path, capsys):
    from hamrah.cli import main

    first, second = tmp_path / "a.json", tmp_path / "b.json"
    first.write_text(json.dumps([_row("2nn-iid-e1-b10-c0", 120.0), _row("2nn-iid-e1-b10-c0.2", 50.0)]))
    second.write_text(json.dumps([_row("2nn-iid-e1-b10-c0.2", 40.0), _row("cnn-iid-e5-b10", 21.8)]))
    out = tmp_path / "report"
    assert main(["reproduce", "mcmahan", "--render", f"{first},{second}", "--out", str(out)]) == 0
    rows = json.loads((out / "results.json").read_text())
    assert [r["id"] for r in rows] == ["2nn-iid-e1-b10-c0", "2nn-iid-e1-b10-c0.2", "cnn-iid-e5-b10"]
    assert rows[1]["rounds_to_target"] == 40.0
    text = (out / "results.md").read_text()
    assert "| 0.2 | 77.0 (4.1x) | 40.0 (3.0x) |" in text and "| cnn-iid-e5-b10 |" in text
    assert (out / "table1.png").stat().st_size > 1000


@pytest.mark.parametrize(
    "text,match",
    [
        ("{not json", "Expecting property name"),
        (json.dumps([{"id": "x"}]), "row 0 lacks .*best_lr"),
        (json.dumps(["a row"]), r"row 0 lacks \(not an object\)"),
    ],
)
def test_render_names_a_file_that_is_not_a_report(tmp_path, capsys, text, match):
    import re

    from hamrah.cli import main

    bad = tmp_path / "r.json"
    bad.write_text(text)
    assert main(["reproduce", "mcmahan", "--render", str(bad), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert f"--render {bad}" in err and re.search(match, err) and "Traceback" not in err


def test_a_cell_reports_progress_every_tenth_of_its_round_cap(tmp_path, monkeypatch):
    import hamrah.experiments.reproduce as reproduce
    from hamrah.simulation import RoundRecord

    def fake_sweep(cfg, rates, out_dir, on_start, on_round):
        on_start(rates[0])
        for r in range(1, 31):
            on_round(RoundRecord(round=r, test_accuracy=r / 100))
        return [SweepPoint(rates[0], 25.0, 0.3, 0.3, 30, 1.0, ((1, 30), (0.01, 0.3)))]

    monkeypatch.setattr(reproduce, "run_sweep", fake_sweep)
    lines: list[str] = []
    row = reproduce.reproduce_cell(CELLS["2nn-iid-e1-b10-c0.2"], tmp_path, 100, log=lines.append)
    assert lines == [
        "  2nn-iid-e1-b10-c0.2: lr 0.215",
        "    round 10 of at most 100: accuracy 0.1000",
        "    round 20 of at most 100: accuracy 0.2000",
        "    round 30 of at most 100: accuracy 0.3000",
    ]
    assert row["rounds_to_target"] == 25.0 and row["pruned"] == []


def test_the_table1_in_the_docs_is_the_render_of_the_committed_results():
    """docs/reproduction.md prints Table 1 exactly as `--render` lays out docs/results/mcmahan_table1.json."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    rows = json.loads((root / "docs/results/mcmahan_table1.json").read_text())
    assert len(rows) == len(TABLE1)
    assert table1_markdown(rows) in (root / "docs/reproduction.md").read_text()
