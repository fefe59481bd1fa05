"""BatchNorm's running statistics travel with the model: the simulator's global model holds the
example-weighted mean of the clients' buffers, and evaluation uses them (eval mode)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from hamrah.algorithms import FedAvg, LocalSGD, train_local
from hamrah.algorithms.local import evaluate
from hamrah.core.params import load_state, model_state
from hamrah.data.federated import ArrayData, Dataset, FederatedDataset
from hamrah.simulation import SimulationConfig, Simulator


def bn_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))


def _clients() -> FederatedDataset:
    g = torch.Generator().manual_seed(1)
    x = torch.cat([torch.rand(10, 12, generator=g) + 2.0, torch.rand(30, 12, generator=g) - 1.0])  # unlike clients
    y = torch.randint(0, 3, (40,), generator=g)
    test = ArrayData(torch.rand(20, 12, generator=g), torch.randint(0, 3, (20,), generator=g))
    return FederatedDataset(Dataset("bn", ArrayData(x, y), test, 3), (np.arange(10), np.arange(10, 40)), "hand")


def test_model_state_holds_float_buffers_not_counters():
    state = model_state(bn_net())
    assert {"2.running_mean", "2.running_var"} <= set(state) and "2.num_batches_tracked" not in state
    other = bn_net()
    load_state(other, {"2.running_mean": torch.full((8,), 3.0)})
    assert torch.equal(other[2].running_mean, torch.full((8,), 3.0)) and torch.equal(
        other[2].running_var, torch.ones(8)
    )


def test_simulator_averages_batchnorm_buffers_example_weighted():
    data = _clients()
    plan = LocalSGD(1, None, 0.1)  # one full-batch step: the buffers see each client's statistics once
    sim = Simulator(bn_net(), data, FedAvg(1.0, plan), SimulationConfig(rounds=1, workers=1, batched=False))
    start = model_state(bn_net())
    sim.run()
    locals_ = [
        train_local(copy.deepcopy(bn_net()), start, data.client_data(k), plan, np.random.default_rng(k)).params
        for k in (0, 1)
    ]
    for name in ("2.running_mean", "2.running_var", "1.weight"):
        expected = (10 * locals_[0][name] + 30 * locals_[1][name]) / 40
        torch.testing.assert_close(sim.params[name], expected, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(sim.params["2.running_mean"], start["2.running_mean"])  # it moved


def test_evaluation_runs_batchnorm_in_eval_mode_on_the_global_statistics():
    data = _clients()
    params = model_state(bn_net())
    params["2.running_mean"] = torch.full((8,), 0.5)
    test = data.dataset.test
    one_by_one = evaluate(bn_net(), params, test, batch_size=1)  # train mode would refuse a batch of one
    assert one_by_one == pytest.approx(evaluate(bn_net(), params, test, batch_size=2000), rel=1e-6)
    params["2.running_mean"] = torch.full((8,), -5.0)
    assert evaluate(bn_net(), params, test)[0] != pytest.approx(one_by_one[0])  # the running statistics are used


def test_batchnorm_under_dp_is_refused_naming_its_running_statistics():
    from hamrah.core.errors import ConfigError
    from hamrah.pipeline import resolve_pipeline

    privacy = {"mode": "central", "clip": 1.0, "noise_multiplier": 1.0}
    spec = resolve_pipeline(None, privacy, population=2, cohort=2, rounds=1)
    with pytest.raises(ConfigError, match=r"running statistics \(2\.running_mean, 2\.running_var\).*GroupNorm"):
        Simulator(bn_net(), _clients(), FedAvg(1.0, LocalSGD(1, None, 0.1)), SimulationConfig(rounds=1), pipeline=spec)
    plain = nn.Sequential(nn.Flatten(), nn.Linear(12, 8), nn.GroupNorm(2, 8), nn.ReLU(), nn.Linear(8, 3))
    spec.check_model(plain)  # GroupNorm keeps no running statistics: accepted


def test_a_config_with_batchnorm_under_dp_is_refused_before_the_server_or_simulator_starts(tmp_path):
    from hamrah.core.errors import ConfigError
    from hamrah.experiments.config import from_dict
    from hamrah.experiments.runner import prepare

    (tmp_path / "bn_task.py").write_text(
        "from torch import nn\nimport hamrah\n\n"
        "class BN(hamrah.ClassificationTask):\n"
        "    def model(self):\n"
        "        layers = [nn.Flatten(), nn.Linear(784, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 10)]\n"
        "        return nn.Sequential(*layers)\n"
        "    def data(self):\n"
        "        from hamrah.data import load_dataset\n"
        "        return load_dataset('mnist')\n"
    )
    raw = {
        "task": {"entry": "bn_task:BN"},
        "data": {"partition": "iid", "num_clients": 10},
        "privacy": {"mode": "central", "clip": 1.0, "noise_multiplier": 1.0},
    }
    with pytest.raises(ConfigError, match="running statistics.*GroupNorm"):
        prepare(from_dict(raw, tmp_path))


def test_a_server_half_that_would_step_running_statistics_like_weights_is_refused():
    """FedOpt's adaptive step or FedNova's rescaling can take a running variance below 0; the refusal names why.
    Server halves that move each buffer to a convex combination of the clients' values are accepted."""
    from hamrah.algorithms import FedNova, FedOpt, FedSGD, Scaffold
    from hamrah.core.errors import ConfigError

    plan, cfg = LocalSGD(1, None, 0.1), SimulationConfig(rounds=1, workers=1, batched=False)
    refused = {
        FedOpt(1.0, plan, "adam"): r"server optimiser \(adam\)",
        FedOpt(1.0, plan, "avgm", beta1=0.9): "server momentum",
        FedNova(1.0, plan): "tau_eff / a_i",
        FedSGD(1.0, lr=2.0): "lr = 2.0 > 1",
        Scaffold(1.0, plan, server_lr=1.5, num_clients=2): "server_lr = 1.5 > 1",
    }
    for algorithm, why in refused.items():
        with pytest.raises(ConfigError, match=rf"{algorithm.name} with model Sequential: .*{why}.*2\.running_mean"):
            Simulator(bn_net(), _clients(), algorithm, cfg)
        plain = nn.Sequential(nn.Flatten(), nn.Linear(12, 8), nn.GroupNorm(2, 8), nn.ReLU(), nn.Linear(8, 3))
        Simulator(plain, _clients(), algorithm, cfg)  # no running statistics: accepted
    for algorithm in (
        FedOpt(1.0, plan, "avgm", server_lr=1.0, beta1=0.0),
        FedSGD(1.0, lr=0.5),
        Scaffold(1.0, plan, num_clients=2),
    ):
        Simulator(bn_net(), _clients(), algorithm, cfg)
