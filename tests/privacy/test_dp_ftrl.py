"""DP-FTRL (Kairouz et al. 2021): the tree, the noise it adds, the participation rule and its accounting."""

from __future__ import annotations

import math

import dp_accounting
import numpy as np
import pytest
import torch
from dp_accounting import rdp
from dp_accounting.privacy_accountant import NeighboringRelation
from hypothesis import given, settings
from hypothesis import strategies as st

from hamrah.core.errors import ConfigError
from hamrah.core.pipeline import Chain, ServerContext, process_round
from hamrah.pipeline import PipelineRun, resolve_pipeline
from hamrah.privacy import DPConfig, RoundSpec, epsilon_of
from hamrah.privacy.ftrl import TreeAggregationNoise, TreeState, dyadic_nodes
from hamrah.privacy.stages import DPClip


def _interval(level: int, index: int) -> range:
    return range(index * 2**level + 1, (index + 1) * 2**level + 1)


@settings(max_examples=200, deadline=None)
@given(t=st.integers(0, 10**6))
def test_dyadic_nodes_partition_the_prefix(t):
    rounds = [r for lv, i in dyadic_nodes(t) for r in _interval(lv, i)]
    assert sorted(rounds) == list(range(1, t + 1))
    assert len(dyadic_nodes(t)) <= max(1, math.ceil(math.log2(t + 1)))


@settings(max_examples=60, deadline=None)
@given(k=st.integers(1, 300), j=st.data())
def test_a_round_meets_at_most_the_depth_the_accountant_charges(k, j):
    """dp-accounting charges a tree of k rounds ceil(log2(k + 1)) Gaussian releases per contribution."""
    r = j.draw(st.integers(1, k))
    nodes = {n for t in range(1, k + 1) for n in dyadic_nodes(t) if r in _interval(*n)}
    assert len(nodes) <= math.ceil(math.log2(k + 1))


def _release(stage, state, agg, rng_seed=0, clients=4):
    return stage.server(agg, state, ServerContext(0, clients, np.random.default_rng(rng_seed)))


@settings(max_examples=25, deadline=None)
@given(k=st.integers(1, 9), rounds=st.integers(1, 20), z=st.floats(0.1, 3.0))
def test_released_noise_telescopes_to_the_tree_prefix_noise(k, rounds, z):
    """Sum of the released aggregates = sum of the means + each finished tree's N_k + the current N_t (x C / D)."""
    stage = TreeAggregationNoise(z, clip=0.5, expected_cohort=4.0, tree_rounds=k)
    zero = {"w": torch.zeros(7), "b": torch.zeros(2, 3)}
    state, total = stage.init_server(zero), {n: torch.zeros_like(v) for n, v in zero.items()}
    for _ in range(rounds):
        out, state = _release(stage, state, zero)
        total = {n: total[n] + out[n] for n in total}
    want = {n: torch.zeros_like(v) for n, v in zero.items()}
    trees, t = divmod(rounds, k)
    for tree in range(trees + 1):
        noise = stage.prefix_noise(state.seed, tree, k if tree < trees else t, zero)
        want = {n: want[n] + noise[n] * 0.5 / 4.0 for n in want}
    for n in want:
        assert torch.allclose(total[n], want[n], atol=1e-5)
    assert state.rounds == rounds


def test_node_noise_has_std_z_and_the_prefix_sums_the_right_number_of_nodes():
    stage = TreeAggregationNoise(2.0, clip=1.0, expected_cohort=1.0, tree_rounds=8)
    like = {"w": torch.zeros(200_000)}
    n7 = stage.prefix_noise(123, 0, 7, like)["w"]  # 7 = 111b: three nodes
    assert float(n7.std()) == pytest.approx(2.0 * math.sqrt(3), rel=0.01)
    assert torch.equal(n7, stage.prefix_noise(123, 0, 7, like)["w"])  # the same tree after a restart
    assert not torch.equal(n7, stage.prefix_noise(123, 1, 7, like)["w"])  # a new tree, new noise


def test_without_noise_the_stage_gives_the_fixed_denominator_sum():
    stage = TreeAggregationNoise(0.0, clip=1.0, expected_cohort=8.0, tree_rounds=4)
    out, state = _release(stage, TreeState(), {"w": torch.ones(3)}, clients=4)
    assert torch.allclose(out["w"], torch.full((3,), 0.5)) and state.seed > 0


def test_clip_then_tree_through_process_round_is_bounded_and_seeded():
    chain = Chain([DPClip(1.0), TreeAggregationNoise(1.0, 1.0, 3.0, 5)])
    ups = {k: {"w": torch.randn(20) * 10} for k in range(3)}
    rngs = {k: np.random.default_rng(k) for k in ups}
    a = process_round(chain, ups, {k: 1.0 for k in ups}, {}, rngs, server_rng=np.random.default_rng(5))
    rngs = {k: np.random.default_rng(k) for k in ups}
    b = process_round(chain, ups, {k: 1.0 for k in ups}, {}, rngs, server_rng=np.random.default_rng(5))
    assert torch.equal(a.aggregate["w"], b.aggregate["w"])


@settings(max_examples=30, deadline=None)
@given(population=st.integers(1, 200), data=st.data())
def test_simulated_cohorts_take_each_client_at_most_once_per_tree(population, data):
    cohort = data.draw(st.integers(1, population))
    k = data.draw(st.integers(1, population // cohort))
    spec = resolve_pipeline(
        None, {"mode": "ftrl", "clip": 1.0, "noise_multiplier": 1.0, "tree_rounds": k}, population, cohort, 3 * k
    )
    for tree in range(3):
        seen = []
        for r in range(tree * k + 1, (tree + 1) * k + 1):
            ids = spec.cohort_of(r, population, lambda t: np.random.default_rng([7, t]))
            assert len(ids) == cohort
            seen.extend(ids.tolist())
        assert len(seen) == len(set(seen))


def test_a_tree_longer_than_the_population_allows_is_refused():
    with pytest.raises(ConfigError, match="at most once per tree"):
        resolve_pipeline(None, {"mode": "ftrl", "clip": 1.0, "noise_multiplier": 1.0, "tree_rounds": 11}, 100, 10, 50)


@pytest.mark.parametrize(
    "bad",
    [
        {"tree_rounds": 0},
        {"tree_rounds": None},
        {"tree_rounds": 4, "accountant": "pld"},
        {"tree_rounds": 4, "adaptive": object()},
    ],
)
def test_bad_ftrl_settings_are_refused(bad):
    with pytest.raises(ConfigError, match="privacy"):
        DPConfig(mode="ftrl", noise_multiplier=1.0, **bad)
    with pytest.raises(ConfigError, match="tree_rounds"):
        DPConfig(mode="central", noise_multiplier=1.0, tree_rounds=4)


@pytest.mark.parametrize("rounds,k", [(1, 1), (7, 3), (25, 10), (100, 16)])
def test_the_charged_epsilon_is_dp_accountings_tree_event(rounds, k):
    spec = resolve_pipeline(
        None, {"mode": "ftrl", "clip": 1.0, "noise_multiplier": 3.0, "tree_rounds": k}, 1000, 10, rounds
    )
    run = PipelineRun(spec, {"w": torch.zeros(3)})
    for _ in range(rounds):
        eps = run.record_round()
    events = [dp_accounting.SingleEpochTreeAggregationDpEvent(3.0, k)] * (rounds // k)
    events += [dp_accounting.SingleEpochTreeAggregationDpEvent(3.0, rounds % k)] if rounds % k else []
    acc = rdp.RdpAccountant(neighboring_relation=NeighboringRelation.REPLACE_SPECIAL)
    assert eps == pytest.approx(acc.compose(dp_accounting.ComposedDpEvent(events)).get_epsilon(1e-5), rel=1e-9)


def test_a_target_epsilon_calibrates_z_for_the_trees():
    spec = resolve_pipeline(None, {"mode": "ftrl", "clip": 1.0, "target_epsilon": 5.0, "tree_rounds": 10}, 100, 10, 50)
    eps = epsilon_of([(RoundSpec.tree(spec.noise_multiplier, 10), 50)], 1e-5)
    assert 4.9 < eps <= 5.0


def test_two_tree_settings_in_one_budget_are_refused():
    with pytest.raises(ConfigError, match="one noise multiplier and tree size"):
        epsilon_of([(RoundSpec.tree(1.0, 4), 3), (RoundSpec.tree(2.0, 4), 3)], 1e-5)


def test_a_simulated_ftrl_run_keeps_each_client_once_per_tree_and_charges_the_tree():
    from hamrah.experiments.config import from_dict
    from hamrah.experiments.runner import prepare

    cfg = from_dict(
        {
            "data": {"dataset": "synthetic_0_0", "partition": "natural", "num_clients": 12},
            "model": {"name": "logreg"},
            "algorithm": {"name": "fedavg", "client_fraction": 0.25, "local_epochs": 1, "batch_size": 10, "lr": 0.1},
            "run": {"rounds": 5, "seed": 3, "eval_every": 5},
            "privacy": {"mode": "ftrl", "clip": 0.5, "noise_multiplier": 1.5, "tree_rounds": 4},
        }
    )
    sim = prepare(cfg).simulator()
    cohorts = [sim.sample(r).tolist() for r in range(1, 6)]
    first_tree = [c for ids in cohorts[:4] for c in ids]
    assert all(len(ids) == 3 for ids in cohorts) and len(first_tree) == len(set(first_tree)) == 12
    result = sim.run()
    assert result.history[-1].epsilon == pytest.approx(epsilon_of([(RoundSpec.tree(1.5, 4), 5)], 1e-5), rel=1e-9)
