"""The client half entry point: client_update equals train_local + delta, reports steps and state."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hamrah.algorithms import ClientUpdate, FedAvg, LocalSGD, batch_schedule, client_update, train_local
from hamrah.core.errors import ConfigError
from hamrah.core.params import clone, max_abs_diff, sub
from hamrah.data import ArrayData
from hamrah.models import LogReg


def _data(n: int, seed: int) -> ArrayData:
    g = torch.Generator().manual_seed(seed)
    return ArrayData(torch.rand(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g))


def test_client_update_is_train_local_delta():
    torch.manual_seed(0)
    model = LogReg()
    g = clone(dict(model.named_parameters()))
    d = _data(23, 1)
    algo = FedAvg(0.1, LocalSGD(2, 5, 0.1))
    up = client_update(algo, model, g, d, np.random.default_rng(3), client_id=7)
    ref = train_local(model, g, d, algo.local_plan(), np.random.default_rng(3))
    assert isinstance(up, ClientUpdate) and up.state is None
    r = up.result
    assert r.client_id == 7 and r.num_examples == 23 and r.error is None and r.aux == {}
    assert max_abs_diff(r.delta, sub(ref.params, g)) == 0.0
    assert r.metrics["local_steps"] == 10 and r.metrics["train_loss"] == pytest.approx(ref.train_loss)


def test_client_update_plan_override_runs_fewer_steps():
    model = LogReg()
    g = clone(dict(model.named_parameters()))
    algo = FedAvg(0.1, LocalSGD(3, 5, 0.1))
    up = client_update(algo, model, g, _data(20, 2), np.random.default_rng(0), plan=LocalSGD(3, 5, 0.1, num_steps=7))
    assert up.result.metrics["local_steps"] == 7


def test_num_steps_schedule_cycles_fresh_shuffles():
    sched = batch_schedule(10, LocalSGD(1, 4, 0.1, num_steps=5), np.random.default_rng(0))
    assert [len(b) for b in sched] == [4, 4, 2, 4, 4]
    assert sorted(np.concatenate(sched[:3]).tolist()) == list(range(10))
    assert LocalSGD(1, 4, 0.1, num_steps=5).steps(10) == 5


@pytest.mark.parametrize(
    "kwargs, key",
    [(dict(momentum=-0.1), "momentum"), (dict(momentum=1.0), "momentum"), (dict(num_steps=0), "local_steps")],
)
def test_local_sgd_rejects_bad_momentum_and_steps(kwargs, key):
    with pytest.raises(ConfigError, match=f"algorithm.{key}"):
        LocalSGD(1, 10, 0.1, **kwargs)
