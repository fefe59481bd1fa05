"""Issue 12, defect 7: SCAFFOLD's control variate moves by (1/N) sum Delta c_i whoever drops out; with
N unknown the server half refuses instead of guessing; local momentum is refused (option II assumes
plain SGD). The refusals failed on the code before the fix (it guessed C/|reported| and took momentum)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hamrah.algorithms import ClientResult, LocalSGD, apply_results, build
from hamrah.algorithms.scaffold import Scaffold
from hamrah.core.errors import ConfigError

PLAN = LocalSGD(1, 10, 0.1)


def _results(aux_values: list[float], dropped: set[int]) -> list[ClientResult]:
    out = []
    for i, v in enumerate(aux_values):
        if i in dropped:
            out.append(ClientResult(i, {}, 10, error="dropped"))
        else:
            out.append(
                ClientResult(i, {"w": torch.tensor([1.0])}, 10, aux={"w": torch.tensor([v], dtype=torch.float64)})
            )
    return out


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 50), st.lists(st.floats(-10, 10), min_size=1, max_size=12), st.data())
def test_control_variate_moves_by_one_over_n_whoever_drops_out(n_extra, aux, data):
    population = len(aux) + n_extra
    dropped = set(data.draw(st.lists(st.integers(0, len(aux) - 1), max_size=len(aux) - 1)))
    algo = Scaffold(0.3, PLAN, num_clients=population)
    g = {"w": torch.tensor([0.0], dtype=torch.float64)}
    state = algo.init_server_state(g)
    _, new = apply_results(algo, g, _results(aux, dropped), state)
    want = sum(v for i, v in enumerate(aux) if i not in dropped) / population
    assert abs(float(new.c["w"]) - want) <= 1e-9 * (1 + abs(want))


def test_unknown_population_is_refused_not_guessed():
    algo = Scaffold(0.5, PLAN)  # the client half alone needs no N
    g = {"w": torch.tensor([0.0])}
    with pytest.raises(ConfigError, match=r"needs the population size N \(num_clients\)"):
        apply_results(algo, g, _results([1.0, 2.0], {1}), algo.init_server_state(g))


def test_local_momentum_is_refused_with_the_reason():
    with pytest.raises(ConfigError, match="algorithm.momentum = 0.9: SCAFFOLD's option II .* plain local SGD"):
        build("scaffold", client_fraction=0.1, momentum=0.9, num_clients=10)
    build("scaffold", client_fraction=0.1, momentum=0.0, num_clients=10)  # plain SGD is fine


def test_a_config_with_scaffold_and_momentum_is_refused_when_read():
    from hamrah.experiments.config import from_dict

    with pytest.raises(ConfigError, match="momentum = 0.5: SCAFFOLD's option II"):
        from_dict(
            {
                "data": {"dataset": "mnist", "num_clients": 10},
                "algorithm": {"name": "scaffold", "client_fraction": 0.5, "momentum": 0.5},
            }
        )
