"""Distributed DP over the real server (issue 12, item 4): devices clip, rotate, round and add discrete
Gaussian noise in the ring before SecAgg masks their vectors (Kairouz, Liu, Steinke 2021); the server's
SecAgg round over gRPC on loopback decodes only the noisy sum. The committed model equals a plain
server's (which equals the simulator's, tests/system/test_rounds.py) up to the noise, the sum the server
decodes always carries the devices' noise, and the epsilon it records is the unsampled DDG accountant's."""

from __future__ import annotations

import asyncio
import math

import numpy as np
import pytest
from tests.system.harness import records, run_system
from tests.system.test_server_secagg import DEVICES, _experiment, _setup

from hamrah.core.errors import ConfigError
from hamrah.core.params import max_abs_diff
from hamrah.pipeline.distributed import DistributedAccountant, DistributedDiscreteGaussian
from hamrah.secagg.params import wire_layout
from hamrah.server.app import FLServer
from hamrah.server.secure import SecureRound

DIM = 7850  # logreg on MNIST


def _privacy(z: float, clip: float) -> dict:
    return {"mode": "distributed", "clip": clip, "noise_multiplier": z, "delta": 1e-5, "sampling": "poisson"}


def _secure(n_min: int = 4) -> dict:
    return {"variant": "secagg", "ring_bits": 32, "min_contributors": n_min}


class _Recorder:
    """Keep every float sum the server's secure rounds decode (what the server ever holds of the updates)."""

    def __init__(self, monkeypatch):
        self.sums: list[np.ndarray] = []
        original = SecureRound._outcome

        def outcome(round_, result):
            self.sums.append(round_.stage.decode_secure(result, round_.layout.size, round_.round_idx))
            return original(round_, result)

        monkeypatch.setattr(SecureRound, "_outcome", outcome)


def test_distributed_dp_rounds_commit_the_plain_model_up_to_the_noise(tmp_path, monkeypatch):
    """With negligible noise (z = 1e-6, clip far above the update norms) the model equals a plain server's
    after 2 rounds; the server recorded the unsampled accountant's epsilon for 2 rounds."""
    plain_setup, stores, tokens = _setup(tmp_path, _experiment(None))
    plain, _, _ = asyncio.run(run_system(plain_setup, tmp_path / "plain", stores, tokens))
    recorder = _Recorder(monkeypatch)
    setup, _, _ = _setup(tmp_path, _experiment(_secure(), _privacy(1e-6, 50.0)))
    ddp, summary, stats = asyncio.run(run_system(setup, tmp_path / "ddp", stores, tokens))

    recs = records(tmp_path / "ddp", setup)
    assert [r["round"] for r in recs] == [1, 2] and summary["rounds_committed"] == 2
    assert all(r["reported"] == DEVICES and r["secagg_survivors"]["unmasking"] == DEVICES for r in recs)
    assert len(recorder.sums) == 2
    assert max_abs_diff(ddp.coordinator.params, plain.coordinator.params) < 1e-4
    stage = DistributedDiscreteGaussian(50.0, 1e-6, 4, float(DEVICES), 32)
    acc = DistributedAccountant(stage.round_mechanism(DIM, 1.0))
    acc.step(2)
    assert [r.get("epsilon") for r in recs][-1] == pytest.approx(acc.epsilon(1e-5), rel=1e-9)


def test_the_only_sum_the_server_decodes_carries_the_devices_noise(tmp_path, monkeypatch):
    """Round 1 with z = 0.01 and clip 50 (no update is clipped): the sum the server decodes minus the
    un-noised sum of the same updates (a plain server's round 1, equal n_k) has per-coordinate std
    sigma sqrt(n) = z c sqrt(n / n_min): the server never holds the sum without the devices' noise."""
    plain_setup, stores, tokens = _setup(tmp_path, _experiment(None, rounds=1))
    plain, _, _ = asyncio.run(run_system(plain_setup, tmp_path / "plain", stores, tokens))
    recorder = _Recorder(monkeypatch)
    z, clip, n_min = 0.01, 50.0, 4
    setup, _, _ = _setup(tmp_path, _experiment(_secure(n_min), _privacy(z, clip), rounds=1))
    ddp, _, _ = asyncio.run(run_system(setup, tmp_path / "ddp", stores, tokens))
    start = FLServer(plain_setup, tmp_path / "fresh").coordinator.params
    layout = wire_layout([(k, tuple(v.shape)) for k, v in start.items()])
    clean = DEVICES * np.concatenate(
        [(plain.coordinator.params[k] - start[k]).double().reshape(-1).numpy() for k in layout.names]
    )
    (noisy,) = recorder.sums
    noise = noisy - clean
    expected = z * clip * math.sqrt(DEVICES / n_min)
    assert abs(noise.mean()) < 4 * expected / math.sqrt(DIM)
    assert 0.95 * expected < noise.std() < 1.05 * expected
    # the committed model is the noisy sum over the expected cohort (6): the same noise, divided by 6
    moved = np.concatenate([(ddp.coordinator.params[k] - start[k]).double().reshape(-1).numpy() for k in layout.names])
    assert np.allclose(moved * DEVICES, noisy, atol=1e-4)


def test_fewer_devices_than_min_contributors_release_nothing(tmp_path):
    """min_contributors above the round's devices: no secure round starts, no round commits."""
    stage = DistributedDiscreteGaussian(1.0, 1.0, DEVICES + 1, float(DEVICES), 20)
    with pytest.raises(ConfigError, match="min_contributors"):
        stage.config(DEVICES, 8192)
