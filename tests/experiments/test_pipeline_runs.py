"""The update pipeline (compression, DP) in simulated runs: bytes, epsilon, the budget, equivalences."""

from __future__ import annotations

import re

import pytest
import torch

from hamrah.compression import quantized_nbytes
from hamrah.core.errors import ConfigError
from hamrah.core.pipeline import DensePayload, spec_of
from hamrah.experiments.config import from_dict
from hamrah.experiments.runner import prepare, run_experiment
from hamrah.privacy import PrivacyAccountant, RoundSpec


def _cfg(rounds=3, **sections):
    base = {
        "data": {"dataset": "mnist", "partition": "iid", "num_clients": 20},
        "model": {"name": "logreg"},
        "algorithm": {"name": "fedavg", "client_fraction": 0.2, "local_epochs": 1, "batch_size": 50, "lr": 0.1},
        "run": {"rounds": rounds, "seed": 0},
    }
    return from_dict({**base, **sections})


def _run(cfg):
    sim = prepare(cfg).simulator()
    result = sim.run()
    return sim, result


def test_a_codec_reports_the_exact_bytes_it_sends():
    sim, result = _run(_cfg(compression={"codec": "quantize", "bits": 8}))
    spec = spec_of(sim.pipeline.template)  # the statistics on the wire: "delta/fc.weight", ...
    assert [n for n, _ in spec] == ["delta/" + k for k in sim.params]
    for rec in result.history:
        assert rec.clients == 4
        assert rec.bytes_up == 4 * quantized_nbytes(spec, 8)
        assert rec.bytes_down == 4 * DensePayload(sim.params).nbytes
    assert rec.bytes_up < rec.bytes_down / 3.9  # 8 bits against float32, plus scales and headers
    assert sim.bytes_total == [3 * rec.bytes_up, 3 * rec.bytes_down]


def test_central_dp_reports_increasing_epsilon_matching_the_accountant():
    cfg = _cfg(privacy={"mode": "central", "clip": 0.5, "noise_multiplier": 1.0, "sampling": "fixed"})
    sim, result = _run(cfg)
    eps = [rec.epsilon for rec in result.history]
    assert eps[0] > 0 and eps == sorted(eps) and eps[0] < eps[1] < eps[2]
    acc = PrivacyAccountant(RoundSpec.fixed(1.0, 4, 20))
    acc.step(3)
    assert eps[-1] == pytest.approx(acc.epsilon(1e-5), rel=1e-9)


def test_a_budget_too_small_is_refused_at_start_naming_the_feasible_rounds():
    acc = PrivacyAccountant(RoundSpec.poisson(2.0, 0.2))
    feasible = acc.rounds_possible(2.0, 1e-5)
    assert 0 < feasible < 50
    with pytest.raises(ConfigError, match=re.escape(f"expected at most {feasible} rounds")):
        _cfg(rounds=50, privacy={"mode": "central", "noise_multiplier": 2.0, "target_epsilon": 2.0})


def test_a_target_epsilon_alone_calibrates_z_to_fit_the_rounds():
    cfg = _cfg(rounds=3, privacy={"mode": "central", "clip": 0.5, "target_epsilon": 4.0})
    sim, result = _run(cfg)
    assert result.stopped is None and len(result.history) == 3
    assert result.history[-1].epsilon <= 4.0 and result.history[-1].epsilon > 3.5


def test_training_stops_before_the_budget_is_exceeded():
    cfg = _cfg(rounds=4, privacy={"mode": "central", "clip": 0.5, "noise_multiplier": 1.0, "target_epsilon": 50.0})
    sim = prepare(cfg).simulator()
    target = sim.pipeline.accountant.epsilon(1e-5, 2)  # a budget that fits 2 rounds, not 3
    sim.pipeline.ledger.target_epsilon = target
    result = sim.run()
    assert [r.round for r in result.history] == [1, 2]
    assert "round 3 would bring epsilon" in result.stopped
    assert result.history[-1].epsilon <= target


def test_the_identity_chain_equals_the_plain_run():
    _, plain = _run(_cfg())
    sim, piped = _run(_cfg(compression={"codec": "none"}))
    assert sim.pipeline is not None
    for k, v in plain.params.items():
        torch.testing.assert_close(piped.params[k], v, rtol=0, atol=1e-6)
    assert [r.test_accuracy for r in piped.history] == pytest.approx([r.test_accuracy for r in plain.history], abs=1e-3)


def test_poisson_rounds_without_clients_still_release_noise():
    cfg = _cfg(
        rounds=6,
        algorithm={"name": "fedavg", "client_fraction": 0.05, "local_epochs": 1, "batch_size": 50, "lr": 0.1},
        privacy={"mode": "central", "clip": 0.5, "noise_multiplier": 1.0},
    )
    sim = prepare(cfg).simulator()
    sizes = [len(sim.sample(r)) for r in range(1, 7)]
    assert 0 in sizes, "seed 0 should draw an empty Poisson round in 6"
    empty = sizes.index(0) + 1
    models, traffic = {0: dict(sim.params)}, {}

    def kept(r):
        models[r], traffic[r] = dict(sim.params), sim.round_bytes

    sim.run(after_round=kept)
    assert traffic[empty] == (0, 0)
    assert any(not torch.equal(models[empty - 1][k], models[empty][k]) for k in models[0])


def test_run_experiment_writes_bytes_and_epsilon(tmp_path):
    cfg = _cfg(
        rounds=2,
        compression={"codec": "float16"},
        privacy={"mode": "central", "clip": 0.5, "noise_multiplier": 1.0, "sampling": "fixed"},
    )
    summary = run_experiment(cfg, tmp_path)
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert all('"epsilon"' in line and '"bytes_up"' in line for line in lines)
    assert summary["pipeline"] == ["dp_clip", "half", "dp_noise"] and summary["epsilon"] > 0


def test_plain_metrics_lines_keep_their_keys(tmp_path):
    run_experiment(_cfg(rounds=1), tmp_path)
    line = (tmp_path / "metrics.jsonl").read_text()
    assert "epsilon" not in line and "bytes_up" not in line


def test_fednova_runs_with_a_codec_and_is_refused_under_dp_with_the_reason():
    fednova = {"name": "fednova", "client_fraction": 0.2, "local_epochs": 1, "batch_size": 50, "lr": 0.1}
    sim = prepare(_cfg(rounds=1, algorithm=fednova, compression={"codec": "sign"})).simulator()
    assert sim.run().history[-1].clients == 4  # issue 11: once refused by a name list
    cfg = _cfg(
        algorithm=fednova, privacy={"mode": "central", "clip": 0.5, "noise_multiplier": 1.0, "sampling": "fixed"}
    )
    with pytest.raises(ConfigError, match="cannot carry statistic 'a_norm'.*not bounded by the clip norm"):
        prepare(cfg).simulator()


def test_a_client_its_codec_cannot_carry_is_refused_not_the_run():
    """A boosted update beyond float16's range (65504) is refused like a NaN one; the others' round goes on."""
    from hamrah.attacks import build_attack

    cfg = _cfg(rounds=2, compression={"codec": "float16"})
    attack = build_attack("scale", frozenset({0, 1, 2, 3, 4}), factor=1e9)
    sim = prepare(cfg).simulator(attack=attack)
    result = sim.run()
    assert [r.round for r in result.history] == [1, 2]
    assert sim.refused >= 1  # the boosted clients the round drew
    for rec in result.history:
        assert rec.clients <= 4
    assert all(bool(torch.isfinite(v).all()) and float(v.abs().max()) < 100 for v in sim.params.values())
