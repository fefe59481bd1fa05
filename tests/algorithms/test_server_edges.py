"""Server halves and personalization at their edges: a client without examples, a proximal pull past
local SGD's stability limit, FedOpt's tau at the float32 limits, an aggregate of zeros or of huge values,
and SCAFFOLD's population N below the reports."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hamrah.algorithms import FedAvg, FedNova, FedOpt, FedProx, LocalSGD, Scaffold, build, client_update
from hamrah.algorithms.aggregate import aggregate_results, apply_results
from hamrah.algorithms.base import ClientResult
from hamrah.algorithms.fednova import a_norm
from hamrah.algorithms.personal import Ditto, Personalized
from hamrah.core.aggregate import Aggregate
from hamrah.core.errors import ConfigError
from hamrah.data import ArrayData
from hamrah.loop import RoundLoop, RunPlan
from hamrah.loop.state import AggregateRefused
from hamrah.models import LogReg

OPTIMIZERS = ("adam", "yogi", "adagrad", "avgm")
TAU_MIN = math.sqrt(float(torch.finfo(torch.float32).tiny))  # hamrah.algorithms.fedopt.TAU_MIN, TAU_MAX
TAU_MAX = math.sqrt(float(torch.finfo(torch.float32).max))


def _empty() -> ArrayData:
    return ArrayData(torch.zeros(0, 1, 28, 28), torch.zeros(0, dtype=torch.long))


def _data(n: int = 20) -> ArrayData:
    g = torch.Generator().manual_seed(0)
    return ArrayData(torch.rand(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g))


def _start() -> tuple[LogReg, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    model = LogReg(784, 10)
    return model, {k: v.detach().clone() for k, v in model.named_parameters()}


def _finite(params: dict[str, torch.Tensor]) -> bool:
    return all(bool(torch.isfinite(v).all()) for v in params.values())


# --- a client without examples (a partition or a large holdout can leave one) -------------------------


def test_fednova_client_without_examples_does_not_poison_the_round() -> None:
    algo = FedNova(1.0, LocalSGD(1, 10, 0.1))
    model, params = _start()
    empty = client_update(algo, model, params, _empty(), np.random.default_rng(0), client_id=0).result
    full = client_update(algo, model, params, _data(), np.random.default_rng(1), client_id=1).result
    assert empty.metrics["local_steps"] == 0
    stats = algo.client_statistics(empty)
    assert _finite(stats) and float(stats["a_norm"][0]) == 0.0  # was delta / 0 = NaN
    both, _ = apply_results(algo, params, [empty, full], algo.init_server_state(params))
    alone, _ = apply_results(algo, params, [full], algo.init_server_state(params))
    assert _finite(both)
    for k in params:  # weight n_k = 0: the empty client changes nothing
        torch.testing.assert_close(both[k], alone[k])


def test_scaffold_client_without_examples_keeps_its_control_variate() -> None:
    algo = Scaffold(1.0, LocalSGD(1, 10, 0.1), num_clients=4)
    model, params = _start()
    c = {k: torch.full_like(v, 0.5) for k, v in params.items()}
    ci = {k: torch.full_like(v, 0.25) for k, v in params.items()}
    up = client_update(algo, model, params, _empty(), np.random.default_rng(0), client_state=ci, broadcast=c)
    assert up.state is not None
    for k in params:  # option II with K = 0 gave c_i - c: c drifted by -c / N per empty client
        torch.testing.assert_close(up.state[k], ci[k])
        assert not bool(up.result.aux[k].any())
    first = client_update(algo, model, params, _empty(), np.random.default_rng(0), broadcast=c)
    assert first.state is not None and not any(bool(v.any()) for v in first.state.values())


# --- proximal pulls (FedProx and FedNova mu, Ditto lam) --------------------------------------------


def test_a_fedprox_mu_past_the_stability_limit_is_refused_naming_it() -> None:
    with pytest.raises(ConfigError, match=r"algorithm\.mu = 20\.0: .*expected a value below 20"):
        build("fedprox", lr=0.1, mu=20.0)  # lr mu = 2: w - w_t flips sign unshrunk; beyond, it grows to inf
    with pytest.raises(ConfigError, match=r"algorithm\.mu = 30\.0: .*below 30"):
        build("fedprox", lr=0.1, momentum=0.5, mu=30.0)
    assert build("fedprox", lr=0.1, mu=19.9).mu == 19.9  # type: ignore[attr-defined]
    assert build("fedprox", lr=0.1, momentum=0.5, mu=29.0).mu == 29.0  # type: ignore[attr-defined]


def test_fednova_mu_whose_step_weights_go_negative_is_refused() -> None:
    assert a_norm(4, 0.1, 0.0, 20.0) == 0.0  # lr mu = 2: FedNova divided by 0
    assert a_norm(12, 1.0, 0.9, 3.4) < 0  # stable, but the momentum iterate overshoots: a negative "norm"
    with pytest.raises(ConfigError, match=r"algorithm\.mu = 10\.5: .*expected lr \* mu <= \(1 - sqrt\(momentum\)\)\^2"):
        build("fednova", lr=0.1, mu=10.5)
    with pytest.raises(ConfigError, match=r"algorithm\.mu = 3\.4"):
        build("fednova", lr=1.0, momentum=0.9, mu=3.4)
    assert build("fednova", lr=0.1, mu=10.0).mu == 10.0  # type: ignore[attr-defined]


def test_fedprox_mu_with_adam_is_not_bounded() -> None:
    assert FedProx(0.1, LocalSGD(1, 10, 0.1, optimizer="adam"), mu=100.0).mu == 100.0


def test_ditto_lam_past_the_stability_limit_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"personalization\.lam = 25\.0: .*below 20"):
        Personalized(FedAvg(0.1, LocalSGD(1, 10, 0.1)), Ditto(25.0))
    with pytest.raises(ConfigError, match=r"personalization\.lam"):
        build("fedavg", lr=0.1, personal="ditto", personal_lambda=20.0)
    assert Personalized(FedAvg(0.1, LocalSGD(1, 10, 0.1)), Ditto(19.0)).method.lam == 19.0  # type: ignore[union-attr]


def _step_weights(steps: int, lr: float, rho: float, mu: float) -> np.ndarray:
    """a_ij of w_tau - w_0 = -lr sum_j a_ij g_j for heavy-ball SGD on F + mu/2 ||w - w_0||^2 (exact, float64)."""
    x, u = np.zeros(steps), np.zeros(steps)
    for t in range(steps):
        u = (rho * u if t else 0.0) + np.eye(steps)[t] + mu * x
        x = x - lr * u
    return np.asarray(-x / lr)


@settings(max_examples=200, deadline=None)
@given(
    steps=st.integers(1, 40),
    lr=st.floats(1e-3, 1.0),
    rho=st.sampled_from([0.0, 0.5, 0.9, 0.99]),
    share=st.floats(0.0, 1.0),
)
def test_a_norm_is_the_l1_norm_for_every_accepted_mu(steps: int, lr: float, rho: float, share: float) -> None:
    """Claim: for every mu FedNova accepts (lr mu <= (1 - sqrt(rho))^2) the step weights a_ij are >= 0, so
    a_norm (their sum) is ||a_i||_1 > 0 and delta / ||a_i||_1 is defined."""
    mu = share * (1 - math.sqrt(rho)) ** 2 / lr
    FedNova(0.1, LocalSGD(1, 10, lr, momentum=rho), mu=mu)  # accepted
    w = _step_weights(steps, lr, rho, mu)
    assert (w >= -1e-9 * np.abs(w).max()).all()
    a = a_norm(steps, lr, rho, mu)
    assert a > 0 and a == pytest.approx(np.abs(w).sum(), rel=1e-6)


# --- FedOpt --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("tau", [1e-30, 5e-324, 1e20, 1e200])
def test_fedopt_tau_outside_float32_is_refused_naming_it(tau: float) -> None:
    with pytest.raises(ConfigError, match=r"algorithm\.tau = .*expected a number in \[1\.0842e-19"):
        build("fedadam", tau=tau)


def test_fedopt_tau_edges_are_accepted_and_finite() -> None:
    params = {"w": torch.zeros(3)}
    for tau in (TAU_MIN, float(np.nextafter(TAU_MAX, 0))):
        algo = FedOpt(1.0, LocalSGD(1, 10, 0.1), "adam", tau=tau)
        state = algo.init_server_state(params)
        assert _finite(state.v)
        new, state = algo.apply(params, Aggregate({"delta/w": torch.zeros(3, dtype=torch.float64)}, 1.0, 1), state)
        assert _finite(new) and _finite(state.m) and _finite(state.v)


@settings(max_examples=200, deadline=None)
@given(
    opt=st.sampled_from(OPTIMIZERS),
    server_lr=st.floats(1e-4, 10.0),
    beta1=st.floats(0.0, 0.99),
    beta2=st.floats(0.0, 0.999),
    log_tau=st.floats(math.log10(TAU_MIN), 18.0),
    log_delta=st.floats(-40.0, 18.0),
    sign=st.sampled_from([-1.0, 0.0, 1.0]),
)
def test_fedopt_first_step_is_bounded(
    opt: str, server_lr: float, beta1: float, beta2: float, log_tau: float, log_delta: float, sign: float
) -> None:
    """Claim: from the initial state, an adaptive step is at most server_lr max(1, (1 - beta1) / sqrt(1 - beta2))
    per coordinate whatever the delta (zeros included), and FedAvgM's is server_lr |delta|."""
    tau = max(10.0**log_tau, TAU_MIN)
    algo = FedOpt(1.0, LocalSGD(1, 10, 0.1), opt, server_lr=server_lr, beta1=beta1, beta2=beta2, tau=tau)
    params = {"w": torch.zeros(4)}
    d = torch.tensor([sign * 10.0**log_delta, 0.0, -(10.0**log_delta), 1.0], dtype=torch.float64)
    new, state = algo.apply(params, Aggregate({"delta/w": d}, 1.0, 1), algo.init_server_state(params))
    assert _finite(new) and _finite(state.m) and _finite(state.v) and state.step == 1
    step = new["w"].abs().to(torch.float64)
    if opt == "avgm":
        bound = server_lr * d.abs() * (1 + 1e-6)
    else:
        bound = torch.full_like(d, server_lr * max(1.0, (1 - beta1) / math.sqrt(1 - beta2)) * 1.01)
    assert bool((step <= bound + 1e-30).all()), (step, bound)
    assert float(new["w"][1]) == 0.0  # a coordinate no client changed does not move


@pytest.mark.parametrize("opt", OPTIMIZERS)
def test_fedopt_overflowing_aggregate_is_refused_and_the_state_kept(opt: str) -> None:
    """A finite aggregate whose square (or momentum) overflows float32: the round loop refuses the round
    and keeps the old model and state, so later rounds are not poisoned."""
    algo = FedOpt(1.0, LocalSGD(1, 10, 0.1), opt, server_lr=1.0)
    params = {"w": torch.zeros(2)}
    loop = RoundLoop(algo, RunPlan(rounds=3), params, algo.init_server_state(params))
    fine, bad = (3e38, 3e48) if opt == "avgm" else (1e18, 1e20)  # 1e20 ** 2 overflows float32
    r = loop.due()
    assert r == 1
    ok = loop.apply(r, Aggregate({"delta/w": torch.tensor([fine, 1.0], dtype=torch.float64)}, 1.0, 1))
    assert _finite(ok.params) and _finite(ok.state.v)
    with pytest.raises(AggregateRefused, match="holds NaN or infinite values"):
        loop.apply(r, Aggregate({"delta/w": torch.tensor([bad, 1.0], dtype=torch.float64)}, 1.0, 1))
    assert _finite(loop.state.v) and _finite(loop.state.m) and loop.state.step == 0
    applied = loop.apply(r, Aggregate({"delta/w": torch.ones(2, dtype=torch.float64)}, 1.0, 1))
    assert _finite(applied.params) and float(applied.params["w"][1]) > 0


# --- SCAFFOLD's N ------------------------------------------------------------------------------------


def test_scaffold_refuses_more_reports_than_its_population() -> None:
    algo = Scaffold(1.0, LocalSGD(1, 10, 0.1), num_clients=2)
    params = {"w": torch.zeros(2)}
    results = [
        ClientResult(i, {"w": torch.ones(2)}, 5, {"local_steps": 1, "train_loss": 0.0}, aux={"w": torch.ones(2)})
        for i in range(3)
    ]
    agg = aggregate_results(algo, results)
    with pytest.raises(ConfigError, match=r"3 clients reported but the population N \(num_clients\) is 2"):
        algo.apply(params, agg, algo.init_server_state(params))
    one, state = Scaffold(1.0, LocalSGD(1, 10, 0.1), num_clients=3).apply(
        params, aggregate_results(algo, results[:1]), algo.init_server_state(params)
    )
    torch.testing.assert_close(one["w"], torch.ones(2))  # one client: its delta
    torch.testing.assert_close(state.c["w"], torch.ones(2) / 3)  # c moves by Delta c_i / N


def test_scaffold_and_fednova_refuse_an_aggregate_of_weight_zero() -> None:
    from hamrah.core.errors import NotEnoughClients

    params = {"w": torch.zeros(2)}
    zero = Aggregate({"delta/w": torch.zeros(2, dtype=torch.float64), "control/w": torch.zeros(2)}, 0.0, 1)
    algo = Scaffold(1.0, LocalSGD(1, 10, 0.1), num_clients=3)
    with pytest.raises(NotEnoughClients):
        algo.apply(params, zero, algo.init_server_state(params))
    nova = FedNova(1.0, LocalSGD(1, 10, 0.1))
    zero_nova = Aggregate({"delta/w": torch.zeros(2, dtype=torch.float64), "a_norm": torch.zeros(1)}, 0.0, 1)
    with pytest.raises(NotEnoughClients):
        nova.apply(params, zero_nova, nova.init_server_state(params))
