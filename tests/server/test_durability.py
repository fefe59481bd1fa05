"""Operating a state folder: one writer, fall back past a corrupt checkpoint, retention, standard JSON,
totals that survive restarts, draining."""

from __future__ import annotations

import asyncio
import json
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.server.driver import make_coordinator, one_round, open_round

from hamrah.core.errors import ConfigError, DataError
from hamrah.server.durability import checkpoints_to_delete
from hamrah.server.state import ServerStore

CFG = {"data": {"dataset": "mnist"}, "model": {"name": "2nn"}, "algorithm": {"name": "fedavg"}}


def _commit(store, r, acc=None, **extra):
    record = {"round": r, **({"test_accuracy": acc} if acc is not None else {}), **extra}
    store.commit(r, {"w": torch.full((2,), float(r))}, {}, {}, record)


def _strict(text: str) -> list[dict]:
    def refuse(name):
        raise ValueError(f"non-standard JSON constant {name}")

    return [json.loads(line, parse_constant=refuse) for line in text.splitlines()]


def test_a_second_server_on_the_same_state_folder_is_refused(tmp_path):
    first = ServerStore(tmp_path, CFG)
    with pytest.raises(ConfigError, match=r"another server \(pid \d+\) is using this state folder"):
        ServerStore(tmp_path, CFG)
    first.close()
    ServerStore(tmp_path, CFG).close()  # free again once the holder is gone


def test_a_corrupt_last_checkpoint_falls_back_to_the_newest_valid_one(tmp_path, caplog):
    store = ServerStore(tmp_path, CFG)
    for r in (1, 2, 3):
        _commit(store, r)
    (tmp_path / "checkpoints" / "round_000003.safetensors").write_bytes(b"rotten")
    with caplog.at_level("WARNING", logger="hamrah.server"):
        r, params, _, _ = store.latest()
    assert r == 2 and torch.equal(params["w"], torch.full((2,), 2.0))
    assert "falling back to committed round 2" in caplog.text and "sha256" in caplog.text
    assert [x["round"] for x in store.committed_rounds()] == [1, 2]
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 2
    store.close()


def test_no_intact_checkpoint_at_all_is_a_clear_data_error(tmp_path):
    store = ServerStore(tmp_path, CFG)
    _commit(store, 1)
    (tmp_path / "checkpoints" / "round_000001.safetensors").unlink()
    with pytest.raises(DataError, match="no committed round has an intact checkpoint"):
        store.latest()
    store.close()


@settings(max_examples=100, deadline=None)
@given(st.lists(st.one_of(st.none(), st.floats(0, 1)), min_size=0, max_size=30), st.integers(0, 8), st.booleans())
def test_retention_keeps_the_newest_rounds_and_the_best(accs, keep_last, keep_best):
    rounds = [(i + 1, a) for i, a in enumerate(accs)]
    gone = set(checkpoints_to_delete(rounds, keep_last, keep_best))
    kept = [r for r, _ in rounds if r not in gone]
    if keep_last == 0 or not rounds:
        assert not gone
        return
    assert rounds[-1][0] in kept  # what a restart resumes from
    assert {r for r, _ in rounds[-keep_last:]} <= set(kept)
    scored = [(a, r) for r, a in rounds if a is not None]
    if keep_best and scored:
        best = max(a for a, _ in scored)
        assert any(a == best and r in kept for a, r in scored)
    assert len(kept) <= keep_last + (1 if keep_best else 0)


def test_retention_deletes_old_checkpoints_but_keeps_every_record(tmp_path):
    store = ServerStore(tmp_path, CFG, keep_last=2, keep_best=True)
    for r, acc in zip(range(1, 7), (0.5, 0.9, 0.6, 0.7, 0.8, 0.85)):
        _commit(store, r, acc)
    files = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert files == ["round_000002.safetensors", "round_000005.safetensors", "round_000006.safetensors"]
    assert len(store.committed_rounds()) == 6
    store.close()


def test_records_and_summary_are_standard_json(tmp_path):
    store = ServerStore(tmp_path, CFG)
    _commit(store, 1, train_loss=math.nan, device_accuracy=math.inf, nested={"x": [-math.inf, 1.0]})
    store.write_summary({"final_accuracy": math.nan})
    (rec,) = _strict((tmp_path / "metrics.jsonl").read_text())
    assert rec["train_loss"] is None and rec["device_accuracy"] is None and rec["nested"] == {"x": [None, 1.0]}
    assert json.loads((tmp_path / "summary.json").read_text(), parse_constant=float)["final_accuracy"] is None
    store.close()


def test_totals_survive_a_restart(tmp_path):
    store = ServerStore(tmp_path, CFG)
    store.commit(1, {"w": torch.zeros(2)}, {}, {}, {"round": 1}, totals={"refused_messages": 7})
    store.close()
    again = ServerStore(tmp_path, CFG)
    assert again.totals() == {"refused_messages": 7}
    again.close()


def _zeros(coord):
    return {k: torch.zeros_like(v) for k, v in coord.params.items()}


def test_elapsed_time_continues_across_restarts_and_drain_stops_after_the_round_in_flight(tmp_path):
    first = make_coordinator(tmp_path, rounds=3, goal_count=2, over_selection=1.0, min_reports=2)

    async def round_one_then_drain():
        runner = asyncio.ensure_future(first.run())
        await open_round(first, 1)
        first.drain()  # SIGTERM during round 1: it still commits, round 2 never starts
        await one_round(first, 1, {"a": (_zeros(first), 600), "b": (_zeros(first), 600)})
        await runner

    asyncio.run(round_one_then_drain())
    assert not first.finished and first.last_round == 1
    elapsed_1 = first.store.committed_rounds()[0]["elapsed_s"]
    first.store.close()
    second = make_coordinator(tmp_path, rounds=2, goal_count=2, over_selection=1.0, min_reports=2)
    assert second.last_round == 1 and second.elapsed_before == elapsed_1

    async def round_two():
        runner = asyncio.ensure_future(second.run())
        await one_round(second, 2, {"a": (_zeros(second), 600), "b": (_zeros(second), 600)})
        await runner

    asyncio.run(round_two())
    recs = second.store.committed_rounds()
    assert [r["round"] for r in recs] == [1, 2] and recs[1]["elapsed_s"] >= elapsed_1
    second.store.close()


def test_half_written_files_a_crash_left_are_removed_when_the_folder_is_opened(tmp_path, caplog):
    store = ServerStore(tmp_path, CFG)
    _commit(store, 1)
    store.close()
    # SIGKILL while writing round 2's checkpoint and the reports: temporaries, never renamed into place
    (tmp_path / "checkpoints" / "round_000002.safetensors.tmp").write_bytes(b"half")
    (tmp_path / "metrics.jsonl.tmp").write_text('{"round": 1}\n{"rou')
    with caplog.at_level("WARNING", logger="hamrah.server"):
        store = ServerStore(tmp_path, CFG)
    assert sorted(p.name for p in tmp_path.rglob("*.tmp")) == []
    assert "removed 2 half-written file(s)" in caplog.text
    assert store.latest()[0] == 1 and [r["round"] for r in store.committed_rounds()] == [1]
    store.close()
    ServerStore(tmp_path, CFG, lock=False).close()  # a reader deletes nothing (it may not hold the lock)
