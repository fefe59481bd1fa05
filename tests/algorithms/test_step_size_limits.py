"""Learning rates past float32's range are refused when the algorithm is built, naming the key and the
accepted range (they were refused only in a round, once the model had become inf or NaN); every
accepted rate keeps the first server step finite."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hamrah.algorithms import FedOpt, LocalSGD, Scaffold, build
from hamrah.algorithms.fedsgd import FedSGD
from hamrah.core.aggregate import Aggregate
from hamrah.core.errors import ConfigError

F32_MAX = float(torch.finfo(torch.float32).max)
LOCAL = LocalSGD(1, 10, 0.1)


def _first_step(algo, delta: torch.Tensor, stats: dict | None = None) -> torch.Tensor:
    params = {"w": torch.zeros(delta.shape)}
    sums = {"delta/w": delta.to(torch.float64), **(stats or {})}
    new, _ = algo.apply(params, Aggregate(sums, 1.0, 1), algo.init_server_state(params))
    return new["w"]


@pytest.mark.parametrize("optimizer", ["adam", "yogi", "adagrad", "avgm"])
def test_a_server_lr_past_float32_is_refused_at_build_time_with_the_range(optimizer):
    with pytest.raises(ConfigError, match=r"algorithm.server_lr = 1e\+39: .*expected a number in \(0, "):
        build("fed" + optimizer, 0.1, local_epochs=1, batch_size=10, lr=0.1, server_lr=1e39)


def test_fedadams_normalised_step_sets_its_limit_from_beta1_and_beta2():
    gain = (1 - 0.0) / math.sqrt(1 - 0.99)  # a delta much larger than tau steps by server_lr * 10
    with pytest.raises(ConfigError, match=r"server_lr \* 10 .*expected a number in \(0, 3.40282e\+37\]"):
        FedOpt(0.1, LOCAL, "adam", server_lr=F32_MAX / 5, beta1=0.0)
    FedOpt(0.1, LOCAL, "adam", server_lr=F32_MAX / gain / 2, beta1=0.0)  # within it


@pytest.mark.parametrize(
    "make, key",
    [
        (lambda lr: Scaffold(0.1, LOCAL, server_lr=lr), "algorithm.server_lr"),
        (lambda lr: FedSGD(0.1, lr), "algorithm.lr"),
        (lambda lr: LocalSGD(1, 10, lr), "algorithm.lr"),
    ],
)
def test_every_server_and_local_rate_past_float32_is_refused(make, key):
    with pytest.raises(ConfigError, match=rf"{key} = 1e\+300: .*inf there.*expected a number in \(0, 3.40282e\+38\]"):
        make(1e300)
    make(1e30)  # huge but finite in float32: accepted (refused per round only if the model diverges)


@settings(max_examples=60, deadline=None)
@given(
    optimizer=st.sampled_from(["adam", "yogi", "adagrad", "avgm"]),
    log_lr=st.floats(-6.0, 39.0),
    beta1=st.floats(0.0, 0.99),
    beta2=st.floats(0.0, 0.999),
    delta=st.floats(-1.0, 1.0),  # avgm steps by server_lr * delta: |delta| <= 1 keeps it within the range
)
def test_an_accepted_server_lr_keeps_the_first_step_finite(optimizer, log_lr, beta1, beta2, delta):
    """Built or refused: an accepted server_lr steps a zero and a moderate delta to a finite model."""
    try:
        algo = FedOpt(0.1, LOCAL, optimizer, server_lr=10.0**log_lr, beta1=beta1, beta2=beta2, tau=1e-3)
    except ConfigError as e:
        assert "algorithm.server_lr" in str(e) and "expected a number in (0, " in str(e)
        return
    for d in (0.0, delta):
        assert bool(torch.isfinite(_first_step(algo, torch.full((3,), d))).all())


@settings(max_examples=40, deadline=None)
@given(log_lr=st.floats(-6.0, 39.0), delta=st.floats(-1.0, 1.0))
def test_an_accepted_scaffold_server_lr_keeps_a_zero_or_unit_step_finite(log_lr, delta):
    try:
        algo = Scaffold(0.1, LOCAL, server_lr=10.0**log_lr, num_clients=1)
    except ConfigError as e:
        assert "algorithm.server_lr" in str(e)
        return
    control = {"control/w": torch.zeros(3, dtype=torch.float64)}
    assert bool(torch.isfinite(_first_step(algo, torch.full((3,), delta), control)).all())
