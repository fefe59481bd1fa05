"""FedProx, SCAFFOLD, FedNova, FedOpt: hand-computed updates, equivalences with FedAvg, registry, state."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hamrah.algorithms import (
    ALGORITHMS,
    ClientResult,
    Correction,
    FedAvg,
    FedNova,
    FedOpt,
    FedOptState,
    FedProx,
    LocalSGD,
    Momentum,
    NoState,
    Proximal,
    Scaffold,
    ScaffoldState,
    a_norm,
    apply_results,
    build,
    client_update,
    flatten_state,
    train_local,
    unflatten_state,
)
from hamrah.core.errors import ConfigError, ProtocolError
from hamrah.core.params import clone, max_abs_diff
from hamrah.data import ArrayData
from hamrah.models import LogReg

T = torch.tensor


def _data(n: int, seed: int) -> ArrayData:
    g = torch.Generator().manual_seed(seed)
    return ArrayData(torch.rand(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g))


def _round(algo, model, g, datas, state=None, client_states=None):
    """One full round through client_update and apply; returns (params, state, updates)."""
    state = algo.init_server_state(g) if state is None else state
    ups = [
        client_update(
            algo,
            model,
            g,
            d,
            np.random.default_rng(i),
            client_id=i,
            broadcast=algo.broadcast(state),
            client_state=(client_states or {}).get(i),
        )
        for i, d in enumerate(datas)
    ]
    new, new_state = apply_results(algo, g, [u.result for u in ups], state)
    return new, new_state, ups


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = LogReg()
    return model, clone(dict(model.named_parameters())), [_data(30, 1), _data(50, 2), _data(17, 3)]


PLAN = LocalSGD(2, 10, 0.1)


# ---- equivalences ---------------------------------------------------------------------------------


def test_fedprox_mu0_equals_fedavg(setup):
    model, g, datas = setup
    a, _, _ = _round(FedAvg(1.0, PLAN), model, g, datas)
    b, _, _ = _round(FedProx(1.0, PLAN, mu=0.0), model, g, datas)
    c, _, _ = _round(FedProx(1.0, PLAN, mu=1.0), model, g, datas)
    assert max_abs_diff(a, b) == 0.0
    assert max_abs_diff(a, c) > 1e-4  # the proximal term does change the result


def test_fednova_equal_steps_equals_fedavg(setup):
    model, g, datas = setup
    same = [_data(40, 4), _data(40, 5), _data(40, 6)]  # equal sizes -> equal local steps
    a, _, _ = _round(FedAvg(1.0, PLAN), model, g, same)
    b, _, _ = _round(FedNova(1.0, PLAN), model, g, same)
    assert max_abs_diff(a, b) < 1e-6
    c, _, _ = _round(FedNova(1.0, PLAN), model, g, datas)  # unequal steps: normalised, so different
    d, _, _ = _round(FedAvg(1.0, PLAN), model, g, datas)
    assert max_abs_diff(c, d) > 1e-5


def test_scaffold_first_round_equals_fedavg_then_differs(setup):
    model, g, datas = setup
    a, _, _ = _round(FedAvg(1.0, PLAN), model, g, datas)
    algo = Scaffold(1.0, PLAN, num_clients=3)
    b, state, ups = _round(algo, model, g, datas)
    assert max_abs_diff(a, b) < 1e-6
    states = {i: u.state for i, u in enumerate(ups)}
    assert max(float(state.c[k].abs().max()) for k in state.c) > 0  # c moved
    b2, _, _ = _round(algo, model, b, datas, state, states)
    a2, _, _ = _round(FedAvg(1.0, PLAN), model, b, datas)
    assert max_abs_diff(a2, b2) > 1e-6


def test_fedavgm_without_momentum_equals_fedavg(setup):
    model, g, datas = setup
    a, _, _ = _round(FedAvg(1.0, PLAN), model, g, datas)
    b, _, _ = _round(FedOpt(1.0, PLAN, "avgm", server_lr=1.0, beta1=0.0), model, g, datas)
    assert max_abs_diff(a, b) < 1e-6


# ---- hand-computed cases --------------------------------------------------------------------------


def test_transforms_hand_computed():
    names, p, grad = ["w"], [T([1.0, 2.0])], [T([0.5, -0.5])]
    out = Proximal(0.5, {"w": T([0.0, 4.0])})(names, p, grad)
    torch.testing.assert_close(out[0], T([1.0, -1.5]))  # g + mu (w - w_t)
    out = Correction({"w": T([1.0, 1.0])})(names, p, grad)
    torch.testing.assert_close(out[0], T([1.5, 0.5]))
    m = Momentum(0.9)
    torch.testing.assert_close(m(names, p, [T([1.0, 0.0])])[0], T([1.0, 0.0]))
    torch.testing.assert_close(m(names, p, [T([1.0, 2.0])])[0], T([1.9, 2.0]))


def test_momentum_local_sgd_matches_torch_sgd(setup):
    model, g, datas = setup
    plan = LocalSGD(2, 8, 0.05, momentum=0.9)
    ours = train_local(model, g, datas[0], plan, np.random.default_rng(0))
    ref = LogReg()
    ref.load_state_dict(g)
    opt = torch.optim.SGD(ref.parameters(), lr=0.05, momentum=0.9)
    from hamrah.algorithms import batch_schedule

    for idx in batch_schedule(30, plan, np.random.default_rng(0)):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(ref(datas[0].x[idx]), datas[0].y[idx]).backward()
        opt.step()
    assert max_abs_diff(ours.params, {k: v.detach() for k, v in ref.named_parameters()}) < 1e-5


def test_fednova_a_norm_closed_forms():
    tau, lr, rho, mu = 7, 0.1, 0.9, 0.5
    assert a_norm(tau, lr) == pytest.approx(tau)
    assert a_norm(tau, lr, momentum=rho) == pytest.approx((tau - rho * (1 - rho**tau) / (1 - rho)) / (1 - rho))
    alpha = lr * mu
    assert a_norm(tau, lr, mu=mu) == pytest.approx((1 - (1 - alpha) ** tau) / alpha)


def test_fednova_apply_hand_computed():
    g = {"w": T([0.0])}
    # Client 1: 2 steps, delta -2 (n=1); client 2: 4 steps, delta -8 (n=3). p = 1/4, 3/4.
    res = [
        ClientResult(0, {"w": T([-2.0])}, 1, {"local_steps": 2}),
        ClientResult(1, {"w": T([-8.0])}, 3, {"local_steps": 4}),
    ]
    new, _ = apply_results(FedNova(1.0, LocalSGD(1, 10, 0.1)), g, res, NoState())
    tau_eff = 0.25 * 2 + 0.75 * 4  # 3.5
    torch.testing.assert_close(new["w"], T([tau_eff * (0.25 * -1.0 + 0.75 * -2.0)]))


def test_scaffold_client_and_server_hand_computed():
    algo = Scaffold(0.5, LocalSGD(1, 10, 0.5), server_lr=2.0, num_clients=4)
    x, y = {"w": T([1.0])}, {"w": T([0.0])}
    c, ci = {"w": T([0.2])}, {"w": T([0.1])}
    # c_i+ = c_i - c + (x - y) / (K lr) = 0.1 - 0.2 + 1 / (2 * 0.5) = 0.9
    torch.testing.assert_close(algo.next_client_state(x, y, 2, c, ci)["w"], T([0.9]))
    (tr,) = algo.local_transforms(x, c, ci)
    torch.testing.assert_close(tr(["w"], [T([0.0])], [T([1.0])])[0], T([1.1]))  # g + c - c_i
    res = [
        ClientResult(0, {"w": T([-1.0])}, 1, aux={"w": T([0.8])}),
        ClientResult(1, {"w": T([-3.0])}, 1, aux={"w": T([0.4])}),
    ]
    new, st = apply_results(algo, x, res, ScaffoldState(c))
    torch.testing.assert_close(new["w"], T([1.0 + 2.0 * -2.0]))
    torch.testing.assert_close(st.c["w"], T([0.2 + (0.8 + 0.4) / 4]))


@pytest.mark.parametrize(
    "opt, v_new",
    [
        ("adam", 0.5 * 0.25 + 0.5 * 4.0),  # beta2 v + (1 - beta2) d^2
        ("yogi", 0.25 - 0.5 * 4.0 * -1.0),  # v - (1 - beta2) d^2 sign(v - d^2)
        ("adagrad", 0.25 + 4.0),
    ],
)
def test_fedopt_hand_computed(opt, v_new):
    algo = FedOpt(1.0, LocalSGD(1, 10, 0.1), opt, server_lr=0.1, beta1=0.5, beta2=0.5, tau=0.5)
    g = {"w": T([1.0])}
    st = algo.init_server_state(g)
    torch.testing.assert_close(st.v["w"], T([0.25]))  # v_{-1} = tau^2
    res = [ClientResult(0, {"w": T([2.0])}, 1), ClientResult(1, {"w": T([2.0])}, 3)]
    new, st2 = apply_results(algo, g, res, st)
    m = 0.5 * 2.0
    torch.testing.assert_close(st2.m["w"], T([m]))
    torch.testing.assert_close(st2.v["w"], T([v_new]))
    torch.testing.assert_close(new["w"], T([1.0 + 0.1 * m / (v_new**0.5 + 0.5)]))
    assert st2.step == 1 and algo.name == "fed" + opt


def test_fedavgm_hand_computed():
    algo = FedOpt(1.0, LocalSGD(1, 10, 0.1), "avgm", server_lr=1.0, beta1=0.5)
    g = {"w": T([0.0])}
    st = algo.init_server_state(g)
    res = [ClientResult(0, {"w": T([1.0])}, 1)]
    g1, st = apply_results(algo, g, res, st)
    g2, st = apply_results(algo, g1, res, st)
    torch.testing.assert_close(g2["w"], T([1.0 + 1.5]))  # m1 = 1, m2 = 0.5 * 1 + 1


def test_aggregator_hook_replaces_weighted_mean():
    g = {"w": T([0.0])}
    res = [ClientResult(i, {"w": T([v])}, n) for i, (v, n) in enumerate([(1.0, 1), (2.0, 1), (100.0, 1)])]
    seen = {}

    def median(deltas, weights):
        seen["weights"] = weights
        return {"w": torch.stack([d["w"] for d in deltas]).median(0).values}

    for algo in (FedAvg(1.0, PLAN), FedProx(1.0, PLAN, mu=0.1), Scaffold(1.0, PLAN, num_clients=3)):
        res_aux = [ClientResult(r.client_id, r.delta, r.num_examples, aux={"w": T([0.0])}) for r in res]
        new, _ = apply_results(algo, g, res_aux, algo.init_server_state(g), median)
        torch.testing.assert_close(new["w"], T([2.0]))
    assert seen["weights"] == [1.0, 1.0, 1.0]


# ---- registry, validation, state ------------------------------------------------------------------


def test_registry_builds_every_algorithm():
    for name in ALGORITHMS:
        algo = build(name, client_fraction=0.2, lr=0.05)
        assert algo.name == name and algo.cohort_size(10) == 2
    assert build("fedprox", mu=1.0, local_epochs=20).local.epochs == 20
    assert build("fedadam", server_lr=0.03, tau=1e-2).tau == 1e-2


@pytest.mark.parametrize(
    "name, kwargs, match",
    [
        ("fedavg", {"mu": 1.0}, "not a hyperparameter of fedavg.*fedprox"),
        ("fedprox", {"mu": -0.1}, "algorithm.mu"),
        ("scaffold", {"server_lr": 0.0}, "algorithm.server_lr"),
        ("fedyogi", {"beta2": 1.0}, "algorithm.beta2"),
        ("fedadam", {"tau": -1.0}, "algorithm.tau"),
        ("fedfoo", {}, "fedsgd, fedavg, fedprox"),
    ],
)
def test_registry_refuses_bad_values(name, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        build(name, **kwargs)


def test_server_state_flatten_round_trip():
    st = FedOptState({"a.w": T([1.0, 2.0])}, {"a.w": T([3.0, 4.0])}, step=5)
    tensors, scalars = flatten_state(st)
    assert set(tensors) == {"m/a.w", "v/a.w"} and scalars["step"] == 5
    back = unflatten_state(FedOptState, tensors, scalars)
    assert back.step == 5 and torch.equal(back.v["a.w"], st.v["a.w"])
    with pytest.raises(ProtocolError, match="ScaffoldState"):
        unflatten_state(ScaffoldState, tensors, scalars)
