"""Local optimizers beyond SGD: Adam and AdamW equal torch's on the same batches; refused where the
algorithm's math assumes SGD; the simulator runs them on the per-client loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hamrah.algorithms import LocalSGD, batch_schedule, build, train_local
from hamrah.algorithms.optimizers import Adam, local_optimizer
from hamrah.algorithms.transforms import Momentum
from hamrah.core.errors import ConfigError
from hamrah.core.params import max_abs_diff
from hamrah.data import ArrayData
from hamrah.models import LogReg
from hamrah.simulation.parallel import batch_pull


def _data(n: int, seed: int) -> ArrayData:
    g = torch.Generator().manual_seed(seed)
    return ArrayData(torch.rand(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g))


def _torch_run(opt_cls, plan: LocalSGD, data: ArrayData, start: dict, **kw) -> dict:
    ref = LogReg()
    ref.load_state_dict(start)
    opt = opt_cls(ref.parameters(), lr=plan.lr, **kw)
    for idx in batch_schedule(len(data), plan, np.random.default_rng(0)):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(ref(data.x[idx]), data.y[idx]).backward()
        opt.step()
    return {k: v.detach() for k, v in ref.named_parameters()}


@pytest.mark.parametrize(
    "name, opt_cls",
    [("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW)],
)
@pytest.mark.parametrize("weight_decay", [0.0, 0.05])
def test_adam_local_update_equals_torch_optim(name, opt_cls, weight_decay):
    torch.manual_seed(0)
    model = LogReg()
    start = {k: v.detach().clone() for k, v in model.named_parameters()}
    data = _data(40, 1)
    plan = LocalSGD(2, 8, 0.01, optimizer=name, betas=(0.8, 0.99), weight_decay=weight_decay)
    ours = train_local(model, start, data, plan, np.random.default_rng(0))
    ref = _torch_run(opt_cls, plan, data, start, betas=(0.8, 0.99), weight_decay=weight_decay)
    assert ours.steps == 10 and max_abs_diff(ours.params, ref) < 1e-5
    assert max_abs_diff(ours.params, start) > 1e-3  # it did move


@settings(max_examples=30, deadline=None)
@given(
    g1=st.floats(-10, 10, allow_subnormal=False),
    g2=st.floats(-10, 10, allow_subnormal=False),
    b1=st.floats(0.0, 0.99),
    b2=st.floats(0.0, 0.999),
    wd=st.floats(0.0, 0.5),
    decoupled=st.booleans(),
)
def test_adam_step_equals_torch_for_any_two_gradients(g1, g2, b1, b2, wd, decoupled):
    """Two steps of one scalar parameter: our direction times lr equals torch's parameter change."""
    lr = 0.1
    p = torch.tensor([0.5], requires_grad=True)
    cls = torch.optim.AdamW if decoupled else torch.optim.Adam
    opt = cls([p], lr=lr, betas=(b1, b2), weight_decay=wd)
    ours = Adam((b1, b2), weight_decay=wd, decoupled=decoupled)
    w = torch.tensor([0.5])
    for g in (g1, g2):
        p.grad = torch.tensor([g])
        opt.step()
        w = w - lr * ours(["p"], [w], [torch.tensor([g])])[0]
    torch.testing.assert_close(w, p.detach(), atol=1e-5, rtol=1e-5)


def test_local_optimizer_picks_the_plan_solver():
    assert local_optimizer(LocalSGD(1, 10, 0.1)) == []
    assert isinstance(local_optimizer(LocalSGD(1, 10, 0.1, momentum=0.9))[0], Momentum)
    (adamw,) = local_optimizer(LocalSGD(1, 10, 0.1, optimizer="adamw", weight_decay=0.01))
    assert isinstance(adamw, Adam) and adamw.decoupled and adamw.weight_decay == 0.01


def test_build_takes_adam_from_a_config_or_a_json_plan():
    algo = build("fedprox", lr=0.01, mu=0.1, local_optimizer="adam", local_betas=[0.8, 0.9], weight_decay=0.01)
    plan = algo.local_plan()
    assert (plan.optimizer, plan.betas, plan.weight_decay) == ("adam", (0.8, 0.9), 0.01)
    assert not plan.plain_sgd and batch_pull(build("fedavg", local_optimizer="adamw"), {}, None) is None
    assert batch_pull(build("fedavg"), {}, None) == 0.0  # plain SGD keeps the batched trainer


@pytest.mark.parametrize(
    "name, kw, match",
    [
        ("scaffold", {"local_optimizer": "adam"}, r"SCAFFOLD's option II control variate .* expected local_optimizer"),
        ("fednova", {"local_optimizer": "adamw"}, r"FedNova normalises each update .* expected local_optimizer"),
        ("fedsgd", {"local_optimizer": "adam"}, r"algorithm.local_optimizer is not a hyperparameter of fedsgd"),
        ("fedavg", {"local_optimizer": "rmsprop"}, r"local_optimizer = 'rmsprop': expected one of sgd, adam, adamw"),
        ("fedavg", {"local_optimizer": "adam", "momentum": 0.9}, r"momentum is SGD's; .*expected momentum unset"),
        ("fedavg", {"weight_decay": 0.1}, r'only with local_optimizer = "adam" or "adamw"'),
        ("fedavg", {"local_optimizer": "adam", "local_betas": [0.9, 1.0]}, r"local_betas = 1.0: expected"),
        ("fedavg", {"local_optimizer": "adam", "local_betas": [0.9]}, r"expected \[beta1, beta2\]"),
        ("fedavg", {"local_optimizer": "adam", "weight_decay": -1.0}, r"weight_decay = -1.0: expected"),
    ],
)
def test_optimizers_refused_with_the_reason(name, kw, match):
    with pytest.raises(ConfigError, match=match):
        build(name, **kw)


def test_experiment_config_passes_local_optimizer_through():
    from hamrah.experiments.config import algorithm_hyperparameters, from_dict

    exp = from_dict(
        {
            "data": {"dataset": "mnist", "partition": "iid", "num_clients": 10},
            "model": {"name": "logreg"},
            "algorithm": {"name": "fedavg", "lr": 0.01, "local_optimizer": "adamw", "weight_decay": 0.01},
        }
    )
    hp = algorithm_hyperparameters(exp)
    assert hp["local_optimizer"] == "adamw" and hp["weight_decay"] == 0.01
    with pytest.raises(ConfigError, match="SCAFFOLD"):
        from_dict(
            {
                "data": {"dataset": "mnist", "partition": "iid", "num_clients": 10},
                "model": {"name": "logreg"},
                "algorithm": {"name": "scaffold", "local_optimizer": "adam"},
            }
        )
