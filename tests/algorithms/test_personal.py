"""Personalized FL (Ditto, FedPer): the global update is the base algorithm's, the client's own part
stays its state, and FedPer's personal layers never leave a client."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hamrah.algorithms import FedAvg, FedProx, LocalSGD, Proximal, build, client_update, train_local
from hamrah.algorithms.personal import Ditto, FedPer, Personalized
from hamrah.core.errors import ConfigError
from hamrah.core.params import max_abs_diff
from hamrah.data import ArrayData
from hamrah.models import LogReg, TwoNN
from hamrah.simulation import seeded

PLAN = LocalSGD(epochs=1, batch_size=8, lr=0.1)


def _data(seed: int, n: int = 40) -> ArrayData:
    g = torch.Generator().manual_seed(seed)
    return ArrayData(torch.rand(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g))


def _params(model) -> dict:
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def _update(algorithm, model, g, data, seed, state=None):
    return client_update(algorithm, model, g, data, np.random.default_rng(seed), client_state=state)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**16), lam=st.floats(0.0, 5.0), with_state=st.booleans())
def test_ditto_sends_exactly_the_base_algorithms_update_and_keeps_the_personal_model(seed, lam, with_state):
    model = seeded(LogReg, 1)
    g, data = _params(model), _data(seed)
    state = {k: v + 0.01 for k, v in g.items()} if with_state else None
    base = FedProx(0.1, PLAN, mu=0.3)
    plain = _update(base, model, g, data, seed)
    own = _update(Personalized(base, Ditto(lam)), model, g, data, seed, state)
    assert max_abs_diff(own.result.delta, plain.result.delta) == 0.0  # what leaves is the base's update
    assert (
        own.result.aux == {}
        and base.client_statistics(own.result).keys() == base.client_statistics(plain.result).keys()
    )
    # the personal model: the same plan from v_k (w_t at first) with the pull lam (v - w_t), after the global run
    rng = np.random.default_rng(seed)
    train_local(model, g, data, PLAN, rng, transforms=[Proximal(0.3, g)])
    start = state if state is not None else g
    expected = train_local(model, start, data, PLAN, rng, transforms=[Proximal(lam, g)]).params
    assert own.state.keys() == g.keys() and max_abs_diff(own.state, expected) == 0.0


def test_a_larger_lambda_keeps_the_personal_model_nearer_the_global_one():
    model = seeded(TwoNN, 0)
    g, data = _params(model), _data(3, n=200)

    def distance(lam: float) -> float:
        v = _update(Personalized(FedAvg(0.1, PLAN), Ditto(lam)), model, g, data, 3).state
        return float(sum(((v[k] - g[k]) ** 2).sum() for k in g))

    assert distance(0.0) > distance(1.0) > distance(5.0) > 0.0


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**16), head=st.sampled_from([("fc3",), ("fc3.weight",), ("fc2", "fc3")]))
def test_fedper_sends_zeros_for_its_personal_layers_and_keeps_them(seed, head):
    model = seeded(TwoNN, 2)
    g, data = _params(model), _data(seed)
    method = FedPer(head)
    state = {k: v + 0.05 for k, v in g.items() if method.personal(k)}
    up = _update(Personalized(FedAvg(0.1, PLAN), method), model, g, data, seed, state)
    stats = FedAvg(0.1, PLAN).client_statistics(up.result)
    for k in g:
        sent = stats[f"delta/{k}"]
        if method.personal(k):
            assert bool((sent == 0).all())  # the personal layers' change never leaves the client
            assert not torch.equal(up.state[k], state[k])  # ... but they trained, from the client's own copy
    assert set(up.state) == {k for k in g if method.personal(k)}
    # the shared layers trained from the global model with the client's own head
    local = train_local(model, method.start(g, state), data, PLAN, np.random.default_rng(seed)).params
    assert all(torch.equal(stats[f"delta/{k}"], local[k] - g[k]) for k in g if not method.personal(k))


def test_fedper_personal_model_is_the_global_one_with_the_clients_layers():
    g = _params(seeded(TwoNN, 0))
    method = FedPer(("fc3",))
    assert max_abs_diff(method.personal_model(g, None), g) == 0.0
    own = {"fc3.weight": torch.ones_like(g["fc3.weight"]), "fc3.bias": torch.ones_like(g["fc3.bias"])}
    mine = method.personal_model(g, own)
    assert torch.equal(mine["fc3.weight"], own["fc3.weight"]) and torch.equal(mine["fc1.weight"], g["fc1.weight"])


def test_config_mistakes_are_refused_with_the_reason():
    with pytest.raises(ConfigError, match="SCAFFOLD's control variate"):
        build("scaffold", 0.1, personal="ditto")
    with pytest.raises(ConfigError, match="without personal"):
        build("fedavg", 0.1, personal_lambda=0.5)
    with pytest.raises(ConfigError, match="expected one of ditto, fedper"):
        build("fedavg", 0.1, personal="perfedavg")
    with pytest.raises(ConfigError, match="lam is Ditto's"):
        build("fedavg", 0.1, personal="fedper", personal_layers=["fc3"], personal_lambda=0.1)
    with pytest.raises(ConfigError, match="personalization.lam"):
        Ditto(-1.0)
    with pytest.raises(ConfigError, match="parameter-name prefixes"):
        build("fedavg", 0.1, personal="fedper")
    names = [n for n, _ in TwoNN().named_parameters()]
    with pytest.raises(ConfigError, match=r"\['fc9'\] name no parameter.*fc1.weight"):
        FedPer(("fc9",)).check(names)
    with pytest.raises(ConfigError, match="every parameter would be personal"):
        FedPer(("fc1", "fc2", "fc3")).check(names)
    a = build("fedprox", 0.1, personal="fedper", personal_layers=["fc3"], mu=0.1)
    assert isinstance(a, Personalized) and a.name == "fedprox" and a.stateful_clients and a.accepts_partial_work
