"""Durable server state: commit, resume, integrity checks, and refusal of a foreign state folder."""

import pytest
import torch

from hamrah.core.errors import ConfigError, DataError
from hamrah.server.state import ServerStore

CFG = {"data": {"dataset": "mnist"}, "model": {"name": "2nn"}, "algorithm": {"name": "fedavg"}}


def test_commit_then_resume_returns_the_last_committed_round(tmp_path):
    store = ServerStore(tmp_path, CFG)
    assert store.latest() is None
    for r in (1, 2):
        store.commit(
            r,
            {"w": torch.full((2,), float(r))},
            {"m/w": torch.zeros(2)},
            {"step": r},
            {"round": r, "test_accuracy": 0.1 * r},
        )
    store.close()
    again = ServerStore(tmp_path, CFG)
    r, params, state, scalars = again.latest()
    assert r == 2 and torch.equal(params["w"], torch.full((2,), 2.0)) and set(state) == {"m/w"}
    assert scalars == {"step": 2}
    assert [x["round"] for x in again.committed_rounds()] == [1, 2]
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 2


def test_an_uncommitted_checkpoint_is_ignored(tmp_path):
    store = ServerStore(tmp_path, CFG)
    store.commit(1, {"w": torch.zeros(2)}, {}, {}, {"round": 1})
    (tmp_path / "checkpoints" / "round_000002.safetensors").write_bytes(b"half-written")
    assert store.latest()[0] == 1


def test_a_tampered_checkpoint_is_detected(tmp_path):
    store = ServerStore(tmp_path, CFG)
    store.commit(1, {"w": torch.zeros(2)}, {}, {}, {"round": 1})
    path = tmp_path / "checkpoints" / "round_000001.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match="sha256"):
        store.latest()


def test_a_state_folder_of_another_run_is_refused(tmp_path):
    ServerStore(tmp_path, CFG).close()
    other = {**CFG, "model": {"name": "cnn"}}
    with pytest.raises(ConfigError, match=r"different \[model\]"):
        ServerStore(tmp_path, other)
