"""DP-SGD as a run option (privacy.mode = "dpsgd"): every algorithm trains with it, each client's
example-level epsilon is accounted from what it actually ran, and no client passes its budget."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from hamrah.algorithms import build
from hamrah.algorithms.base import ExampleDP
from hamrah.algorithms.dpsgd import example_epsilon, privacy_events
from hamrah.core.errors import ConfigError
from hamrah.core.params import max_abs_diff
from hamrah.data.federated import ArrayData, Dataset, FederatedDataset
from hamrah.experiments.config import from_dict
from hamrah.experiments.runner import prepare
from hamrah.privacy.examples import ExampleLedger
from hamrah.simulation import SimulationConfig, Simulator, seeded
from hamrah.simulation.heterogeneity import BUDGET_SPENT

DP_KEYS = {"dp_clip": 1.0, "dp_noise_multiplier": 1.1}


def _clients(sizes=(12, 12, 20, 30)) -> FederatedDataset:
    g = torch.Generator().manual_seed(1)
    n = sum(sizes)
    x, y = torch.rand(n, 6, generator=g), torch.randint(0, 3, (n,), generator=g)
    test = ArrayData(torch.rand(20, 6, generator=g), torch.randint(0, 3, (20,), generator=g))
    bounds = np.cumsum((0, *sizes))
    parts = tuple(np.arange(bounds[i], bounds[i + 1]) for i in range(len(sizes)))
    return FederatedDataset(Dataset("tiny", ArrayData(x, y), test, 3), parts, "hand")


def _model() -> nn.Module:
    return seeded(lambda: nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)), 0)


def _sim(algorithm, rounds=3, ledger=None, **cfg) -> Simulator:
    ledger = ExampleLedger(1e-5) if ledger is None else ledger
    config = SimulationConfig(rounds=rounds, workers=1, **cfg)
    return Simulator(_model(), _clients(), algorithm, config, example_ledger=ledger)


@pytest.mark.parametrize("name", ["fedsgd", "fedavg", "fedprox", "scaffold", "fedadam", "fedavgm"])
def test_every_algorithm_trains_with_dpsgd(name):
    extra = {"num_clients": 4} if name == "scaffold" else {}
    algo = build(name, 0.5, **({} if name == "fedsgd" else {"batch_size": 5}), **DP_KEYS, **extra)
    assert algo.local_plan().example_dp == ExampleDP(1.0, 1.1)
    sim = _sim(algo)
    result = sim.run()
    assert all(bool(torch.isfinite(v).all()) for v in result.params.values())
    assert max_abs_diff(result.params, _sim(algo).params) > 0  # it trained
    assert result.history[-1].epsilon is not None and result.history[-1].epsilon > 0


def test_without_noise_and_clipping_dpsgd_is_plain_sgd():
    """Equal clients: DP-SGD's uniform weights are then plain FedAvg's n_k weights."""
    plain = build("fedavg", 1.0, batch_size=5, local_epochs=2)
    dp = build("fedavg", 1.0, batch_size=5, local_epochs=2, dp_clip=1e30, dp_noise_multiplier=0.0, dp_poisson=False)
    data = _clients((12, 12, 12, 12))
    a = Simulator(_model(), data, plain, SimulationConfig(rounds=2, workers=1, batched=False)).run()
    config = SimulationConfig(rounds=2, workers=1)
    b = Simulator(_model(), data, dp, config, example_ledger=ExampleLedger(1e-5)).run()
    assert max_abs_diff(a.params, b.params) < 1e-5


def test_fednova_is_refused_under_dpsgd_naming_its_step_count():
    with pytest.raises(ConfigError, match="fednova.*outside the example-level epsilon"):
        build("fednova", 0.5, batch_size=5, **DP_KEYS)


def test_the_reported_epsilon_is_the_largest_any_client_spent():
    algo = build("fedavg", 0.5, batch_size=4, **DP_KEYS)
    sim = _sim(algo, rounds=6)
    result = sim.run()
    plan, sizes = algo.local_plan(), [12, 12, 20, 30]
    picks = [0] * 4
    for r in range(1, 7):
        for c in sim.sample(r):
            picks[int(c)] += 1
    expected = max(example_epsilon(plan, sizes[c], 1e-5, picks[c]) for c in range(4) if picks[c])
    assert result.history[-1].epsilon == pytest.approx(expected, rel=1e-9)
    assert set(sim.examples.spent) == {c for c in range(4) if picks[c]}  # only who trained has spent


@settings(max_examples=12, deadline=None)
@given(target=st.floats(0.5, 6.0), seed=st.integers(0, 50), fraction=st.sampled_from([0.5, 1.0]))
def test_no_client_ever_passes_its_example_level_budget(target, seed, fraction):
    algo = build("fedavg", fraction, batch_size=4, **DP_KEYS)
    ledger = ExampleLedger(1e-5, target_epsilon=target)
    sim = _sim(algo, rounds=12, ledger=ledger, seed=seed)
    sat_out, plan, sizes = [], algo.local_plan(), [12, 12, 20, 30]
    sim.train_round = _spy(
        sim.train_round, sat_out, lambda: any(ledger.allows(c, privacy_events(plan, sizes[c])) for c in range(4))
    )
    result = sim.run()
    assert all(ledger.epsilon(c) <= target for c in ledger.spent)  # the guarantee
    for c in range(4):  # whoever sat out could not afford one more training
        if c in sat_out:
            assert not ledger.allows(c, privacy_events(plan, sizes[c]))
    exhausted = not any(ledger.allows(c, privacy_events(plan, sizes[c])) for c in range(4))
    if exhausted:  # the run ends once nobody can train any more (at round 12 at the latest)
        assert result.stopped is not None or result.history[-1].round == 12
    if result.stopped is not None:
        assert "every client has spent its example-level privacy budget" in result.stopped and exhausted


def _spy(train_round, sat_out, anyone_can_train):
    def wrapped(r):
        assert anyone_can_train(), f"round {r} ran after every client had spent its budget"
        results = train_round(r)
        sat_out.extend(x.client_id for x in results if x.error == BUDGET_SPENT)
        return results

    return wrapped


def test_a_dpsgd_algorithm_needs_a_ledger_and_a_ledger_needs_dpsgd():
    with pytest.raises(ConfigError, match=r"trains with DP-SGD: expected example_ledger=ExampleLedger"):
        Simulator(_model(), _clients(), build("fedavg", 0.5, **DP_KEYS), SimulationConfig(rounds=1))
    with pytest.raises(ConfigError, match="does not train with DP-SGD"):
        Simulator(_model(), _clients(), build("fedavg", 0.5), SimulationConfig(1), example_ledger=ExampleLedger(1e-5))


def test_batchnorm_is_refused_under_dpsgd():
    bn = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.Linear(8, 3))
    with pytest.raises(ConfigError, match=r'privacy.mode = "dpsgd" with model Sequential: .* mix the examples'):
        Simulator(
            bn, _clients(), build("fedavg", 0.5, **DP_KEYS), SimulationConfig(1), example_ledger=ExampleLedger(1e-5)
        )


def _config(**privacy):
    return from_dict(
        {
            "data": {"dataset": "synthetic_iid", "num_clients": 6},
            "model": {"name": "logreg"},
            "algorithm": {"name": "fedavg", "client_fraction": 0.5, "local_epochs": 1, "batch_size": 10, "lr": 0.1},
            "privacy": {"mode": "dpsgd", "clip": 1.0, **privacy},
            "run": {"rounds": 2, "seed": 0, "workers": 1},  # in-process: no worker pool to start
        }
    )


def test_a_config_runs_dpsgd_and_refuses_it_without_a_noise_multiplier():
    prep = prepare(_config(noise_multiplier=1.0, sampling="fixed", target_epsilon=50.0))
    assert prep.pipeline is None  # DP-SGD is in local training, not a pipeline stage
    plan = prep.algorithm.local_plan()
    assert plan.example_dp == ExampleDP(1.0, 1.0, poisson=False)
    sim = prep.simulator()
    assert sim.examples.target_epsilon == 50.0 and not sim.batched
    result = sim.run()
    assert result.history[-1].epsilon > 0
    with pytest.raises(
        ConfigError, match=r'privacy.noise_multiplier = None: expected a value with privacy.mode = "dpsgd"'
    ):
        _config(target_epsilon=5.0)
    assert dataclasses.replace(plan, example_dp=None).plain_sgd


def test_a_dpsgd_run_is_not_checkpointed_for_an_exact_resume():
    from hamrah.simulation.resume import resume_problem, snapshot

    sim = _sim(build("fedavg", 0.5, **DP_KEYS))
    assert resume_problem(sim) == "its per-client DP-SGD ledger is not checkpointed"
    with pytest.raises(ConfigError, match="cannot checkpoint this run: its per-client DP-SGD ledger"):
        snapshot(sim, 1)


def test_hamrah_run_summarises_the_largest_client_epsilon(tmp_path):
    from hamrah.experiments.runner import run_experiment

    records = []
    summary = run_experiment(_config(noise_multiplier=1.0, target_epsilon=50.0), tmp_path, records.append)
    assert summary["privacy_unit"] == "example" and summary["delta"] == 1e-5 and summary["noise_multiplier"] == 1.0
    assert summary["epsilon"] == records[-1].epsilon > 0
