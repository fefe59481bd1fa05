"""Model updates through secure aggregation: flatten/unflatten round-trips, and the secure weighted
mean equals FedAvg's weighted mean over the clients that contributed."""

from __future__ import annotations

import importlib

import pytest
import torch

from hamrah.core.errors import ConfigError, ProtocolError
from hamrah.secagg import SecAggConfig, flatten_params, secure_weighted_mean, unflatten_params


def _delta(seed: int):
    g = torch.Generator().manual_seed(seed)
    return {"fc.weight": 0.01 * torch.randn(3, 4, generator=g), "fc.bias": 0.01 * torch.randn(3, generator=g)}


def test_flatten_round_trips_names_shapes_dtypes():
    params = {"a": torch.arange(6, dtype=torch.float32).reshape(2, 3), "b": torch.tensor([1.5], dtype=torch.float64)}
    vec, layout = flatten_params(params)
    assert vec.tolist() == [0, 1, 2, 3, 4, 5, 1.5] and layout.size == 7
    back = unflatten_params(vec, layout)
    assert list(back) == ["a", "b"] and back["a"].dtype == torch.float32 and torch.equal(back["a"], params["a"])
    with pytest.raises(ProtocolError, match="does not fit a layout of 7"):  # one ParamsLayout (hamrah.core.params)
        unflatten_params(vec[:-1], layout)


def test_secure_weighted_mean_equals_weighted_mean_of_contributors():
    deltas, sizes = [_delta(s) for s in range(6)], [10, 50, 20, 5, 40, 30]
    config = SecAggConfig(num_clients=6, vector_length=16, clip=0.05, input_bits=20)
    mean, run = secure_weighted_mean(deltas, sizes, config, dropouts={"masked_input": {1}, "unmasking": {4}}, seed=2)
    contributors = run.result.contributors
    assert contributors == (0, 2, 3, 4, 5)  # client 4 dropped after its masked input: still counted
    total = sum(sizes[k] for k in contributors)
    for name in mean:
        expected = sum(sizes[k] * deltas[k][name] for k in contributors) / total
        torch.testing.assert_close(mean[name], expected, rtol=0, atol=1e-5)


def test_secure_weighted_mean_checks_the_vector_length():
    with pytest.raises(ConfigError, match="vector_length must be 16"):
        secure_weighted_mean([_delta(0)] * 3, [1, 1, 1], SecAggConfig(num_clients=3, vector_length=15))


def test_public_api_names_exist():
    mod = importlib.import_module("hamrah.secagg")
    assert len(mod.__all__) == len(set(mod.__all__))
    for name in mod.__all__:
        assert hasattr(mod, name), name
