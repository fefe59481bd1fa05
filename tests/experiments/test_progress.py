"""Progress for long commands: plain, line-oriented output when not on a terminal (done, rate, time left)."""

from __future__ import annotations

import json
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from hamrah.experiments import progress
from hamrah.experiments.progress import _eta, follow_rounds, work_progress


def test_work_progress_prints_one_line_per_item_off_a_terminal(capsys):
    assert not progress.console.is_terminal  # pytest captures: not a terminal
    with work_progress(3, "lab", "cells") as step:
        step("cell a done")
        step()
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "cell a done"
    assert re.fullmatch(r"lab: 1/3 cells \(.+, about \d+ s left\)", lines[1])
    assert lines[2].startswith("lab: 2/3 cells (") and len(lines) == 3
    assert "\x1b[" not in "".join(lines)  # no terminal control codes in a pipe


def test_follow_rounds_is_silent_off_a_terminal(tmp_path, capsys):
    metrics = tmp_path / "metrics.jsonl"
    with follow_rounds(metrics, 5):
        metrics.write_text(json.dumps({"round": 1}) + "\n")
    assert capsys.readouterr().out == ""


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 10_000), st.floats(0, 1e6))
def test_eta_states_rate_and_time_left(done, total, elapsed):
    text = _eta(done, total, elapsed)
    if done == 0 or elapsed <= 1e-9:
        assert text == "rate unknown yet"
        return
    left = max(total - done, 0) * elapsed / done
    assert "left" in text and ("s each" in text or "/s" in text)
    shown = float(re.search(r"about ([\d.]+) (min|s) left", text).group(1))
    unit = re.search(r"(min|s) left", text).group(1)
    assert abs(shown * (60 if unit == "min" else 1) - left) <= (3.0 if unit == "min" else 0.5)


def test_fleet_progress_prints_a_line_per_new_round_off_a_terminal(capsys):
    from hamrah.experiments.progress import fleet_progress

    with fleet_progress() as on_round:
        on_round(1, 10)
        on_round(3, 10)
        on_round(4, None)  # a server that does not say its rounds
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "fleet: round 1/10 under way"
    assert out[1].startswith("fleet: round 3/10 under way (") and "left)" in out[1]
    assert out[2] == "fleet: round 4 under way"
