"""Distributed DP with secure aggregation (Kairouz, Liu, Steinke 2021): the accountant against dp-accounting,
drop-outs, and the stage through the update pipeline with the real SecAgg protocol."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import dp_accounting
import numpy as np
import pytest
import torch
from dp_accounting.rdp import rdp_privacy_accountant as rdp_lib
from hypothesis import given, settings
from hypothesis import strategies as st

from hamrah.core.errors import ConfigError
from hamrah.core.pipeline import Chain, process_round
from hamrah.pipeline.distributed import (
    ORDERS,
    DistributedAccountant,
    DistributedDiscreteGaussian,
    DistributedRound,
)
from hamrah.pipeline.distributed_accounting import _poisson_subsampled
from hamrah.secagg import ddg


def _round(sigma_int: float, n: int, q: float = 1.0, dim: int = 1024, clip_units: float = 2000.0) -> DistributedRound:
    gamma = 1e-3
    params = ddg.DDGParams(dim, clip_units * gamma, gamma, sigma_int * gamma, ring_bits=40)
    return DistributedRound(params, n, q)


def test_without_tau_and_sampling_the_rdp_is_the_gaussian_mechanisms():
    r = _round(sigma_int=500.0, n=10)  # tau = 10 sum exp(-2 pi^2 500^2 ...) = 0
    l1, l2, tau = r.scales()
    assert tau == 0.0
    acc = dp_accounting.rdp.RdpAccountant(list(ORDERS))
    acc.compose(dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(1 / l2), 30))
    ours = DistributedAccountant(r)
    ours.step(30)
    assert math.isclose(ours.epsilon(1e-5), acc.get_epsilon(1e-5), rel_tol=1e-9)


@settings(max_examples=40, deadline=None)
@given(st.floats(1e-3, 0.9), st.floats(0.5, 20.0), st.sampled_from([2, 3, 5, 8, 16, 40, 128]))
def test_the_subsampling_bound_is_never_below_the_exact_gaussian_one(q, z, order):
    ours = _poisson_subsampled(order, q, lambda a: np.asarray(a) / (2 * z * z))
    exact = float(rdp_lib._compute_rdp_poisson_subsampled_gaussian(q, z, [order])[0])
    assert ours >= exact * (1 - 1e-6)  # float rounding at tiny values
    if order == 2:
        assert math.isclose(ours, exact, rel_tol=1e-6)


def test_a_small_local_noise_pays_the_tau_term():
    coarse, fine = _round(sigma_int=0.6, n=20), _round(sigma_int=500.0, n=20)
    assert coarse.scales()[2] > 1e-3 and fine.scales()[2] == 0.0
    # Same noise-to-sensitivity ratio (scaled clip), but the sum of few-unit discrete Gaussians is not one.
    ratio = 0.6 / 500.0
    scaled = _round(sigma_int=0.6, n=20, clip_units=2000.0 * ratio)
    assert scaled.unsampled_rdp(8) > fine.unsampled_rdp(8) * 0.99


@settings(max_examples=10, deadline=None)
@given(st.integers(2, 60), st.integers(1, 59), st.floats(0.01, 1.0))
def test_fewer_guaranteed_contributors_cost_more_epsilon(n, fewer, q):
    fewer = min(fewer, n - 1) or 1
    a, b = DistributedAccountant(_round(3.0, n, q)), DistributedAccountant(_round(3.0, fewer, q))
    a.step(10)
    b.step(10)
    assert b.epsilon(1e-5) >= a.epsilon(1e-5)


def test_calibrated_noise_spends_the_target_and_no_less_noise_would():
    from hamrah.pipeline.distributed import calibrate_noise

    stage = DistributedDiscreteGaussian(clip=0.5, noise_multiplier=1.0, min_contributors=20, expected_cohort=25)
    z = calibrate_noise(stage, 1000, 0.2, 10, 1e-5, 3.0, tol=1e-4)

    def eps(zz):
        acc = DistributedAccountant(DistributedDiscreteGaussian(0.5, zz, 20, 25).round_mechanism(1000, 0.2))
        acc.step(10)
        return acc.epsilon(1e-5)

    assert eps(z) <= 3.0 < eps(z * 0.999)


def _updates(n: int, dim: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {k: {"w": torch.tensor(rng.normal(size=dim) * 0.1, dtype=torch.float32)} for k in range(n)}


def _run(stage, updates, round_idx=1):
    rngs = {k: np.random.default_rng(100 + k) for k in updates}
    return process_round(
        Chain([stage]),
        updates,
        {k: 1.0 for k in updates},
        {},
        rngs,
        round_idx=round_idx,
        server_rng=np.random.default_rng(7),
    )


def test_the_stage_releases_the_noisy_sum_over_the_fixed_denominator():
    n, dim = 6, 40
    stage = DistributedDiscreteGaussian(
        clip=1.0, noise_multiplier=1e-3, min_contributors=4, expected_cohort=8, ring_bits=24
    )
    updates = _updates(n, dim)
    out = _run(stage, updates)
    clipped = [u["w"].double() * min(1.0, 1.0 / float(u["w"].norm())) for u in updates.values()]
    expected = torch.stack(clipped).sum(0) / 8
    # Noise std z c = 1e-3 on the sum (x sqrt(6 / 4): more contributors than n_min), rounding gamma ~ 1e-5.
    assert float((out.aggregate["w"].double() - expected).abs().max()) < 6 * 1.3e-3 / 8
    assert all(b > 0 for b in out.bytes.up.values())  # the protocol's real bytes


def test_noise_on_any_released_sum_is_at_least_z_c():
    dim, z = 4096, 0.5
    stage = DistributedDiscreteGaussian(
        clip=1.0, noise_multiplier=z, min_contributors=4, expected_cohort=4, ring_bits=24
    )
    zero = {k: {"w": torch.zeros(dim)} for k in range(5)}
    out = _run(stage, zero)
    std = float(out.aggregate["w"].double().std()) * 4  # undo the fixed denominator: the noise on the sum
    assert std == pytest.approx(z * math.sqrt(5 / 4), rel=0.05)


def test_a_round_below_min_contributors_releases_nothing():
    stage = DistributedDiscreteGaussian(clip=1.0, noise_multiplier=1.0, min_contributors=5, expected_cohort=6)
    out = _run(stage, _updates(4, 10))
    assert float(out.aggregate["w"].abs().max()) == 0.0


def test_bad_settings_are_refused_by_name():
    with pytest.raises(ConfigError, match="variant = 'secagg\\+' with privacy.mode = \"distributed\""):
        DistributedDiscreteGaussian(variant="secagg+")
    with pytest.raises(ConfigError, match="min_contributors = 1"):
        DistributedDiscreteGaussian(min_contributors=1)
    with pytest.raises(ConfigError, match="ring_bits = 70"):
        DistributedDiscreteGaussian(ring_bits=70)


# -- the config path: [privacy] mode = "distributed" + [secure_aggregation] ------------------------------


def _config(privacy: dict, secure: dict | None, **extra):
    from hamrah.experiments.config import from_dict

    d = {
        "data": {"dataset": "mnist", "partition": "iid", "num_clients": 100},
        "model": {"name": "logreg"},
        "algorithm": {"name": "fedavg", "client_fraction": 0.1, "local_epochs": 1, "batch_size": 50, "lr": 0.1},
        "run": {"rounds": 2, "seed": 0, "eval_every": 2},
        "privacy": {"mode": "distributed", "clip": 0.5, "noise_multiplier": 1.0, **privacy},
        **extra,
    }
    if secure is not None:
        d["secure_aggregation"] = secure
    return from_dict(d)


@pytest.mark.parametrize(
    "privacy,secure,extra,match",
    [
        ({}, None, {}, "needs \\[secure_aggregation\\]"),
        ({}, {"variant": "secagg+"}, {}, 'expected "secagg"'),
        (
            {"noise_multiplier": None, "target_epsilon": 4.0},
            {"variant": "secagg"},
            {},
            "expected privacy.noise_multiplier",
        ),
        ({"sampling": "fixed"}, {"variant": "secagg"}, {}, 'expected sampling = "poisson"'),
        ({}, {"variant": "secagg"}, {"compression": {"codec": "quantize", "bits": 8}}, "with \\[compression\\]"),
    ],
)
def test_the_config_path_refuses_what_distributed_dp_cannot_guarantee(privacy, secure, extra, match):
    from hamrah.experiments.config import pipeline_spec  # the resolver the runner calls

    with pytest.raises(ConfigError, match=match):
        pipeline_spec(_config(privacy, secure, **extra), 100)


def test_ring_settings_without_distributed_dp_are_refused():
    from hamrah.experiments.config import from_dict, pipeline_spec

    with pytest.raises(ConfigError, match="secure_aggregation.ring_bits applies only with privacy.mode"):
        pipeline_spec(
            from_dict({"data": {"dataset": "mnist", "num_clients": 100}, "secure_aggregation": {"ring_bits": 20}}), 100
        )


def test_a_simulated_run_charges_the_distributed_accountant():
    from hamrah.experiments.runner import prepare

    sim = prepare(_config({}, {"variant": "secagg", "ring_bits": 20, "min_contributors": 3})).simulator()
    stage = sim.pipeline.chain.stages[0]
    assert isinstance(stage, DistributedDiscreteGaussian) and stage.min_contributors == 3
    assert isinstance(sim.pipeline.accountant, DistributedAccountant)
    history = sim.run().history
    expected = DistributedAccountant(stage.round_mechanism(7850, 0.1))
    expected.step(2)
    assert history[-1].epsilon == pytest.approx(expected.epsilon(1e-5))


def test_the_real_server_accounts_distributed_dp_without_sampling_amplification(tmp_path):
    """The server takes the devices that check in, so it cannot prove Poisson sampling: its DDG accountant
    charges every round unsampled (q = 1), which holds whoever checks in, and it claims that epsilon (it
    refused distributed DP before the SecAgg rounds carried ring vectors)."""
    from hamrah.server.pipeline import ServerPipeline

    config = {
        "data": {"num_clients": 100},
        "run": {"rounds": 2},
        "privacy": {"mode": "distributed", "clip": 0.5, "noise_multiplier": 1.0},
        "secure_aggregation": {"variant": "secagg"},
    }
    pipe = ServerPipeline.from_config(config, {"w": torch.zeros(3)}, 10, tmp_path, "fedavg")
    acc = pipe.run.accountant
    assert isinstance(acc, DistributedAccountant) and acc.spec.sampling_probability == 1.0
    assert pipe.privacy.claims
    sampled = DistributedAccountant(pipe.run.chain.stages[0].round_mechanism(3, 0.1))
    acc.step(2)
    sampled.step(2)
    assert acc.epsilon(1e-5) > sampled.epsilon(1e-5)  # no amplification claimed


@settings(max_examples=15, deadline=None)
@given(rounds=st.integers(0, 50), tamper=st.floats(1e-3, 10.0))
def test_the_servers_ddg_ledger_restores_its_rounds_and_refuses_a_forged_epsilon(rounds, tamper):
    from hamrah.core.errors import DataError
    from hamrah.pipeline.distributed import ledger_to_dict, restore_ledger

    stage = DistributedDiscreteGaussian(0.5, 1.0, 4, 10.0, 20)
    acc = DistributedAccountant(stage.round_mechanism(100, 1.0))
    acc.step(rounds)
    saved = ledger_to_dict(acc, 1e-5)
    fresh = DistributedAccountant(stage.round_mechanism(100, 1.0))
    restore_ledger(fresh, json.loads(json.dumps(saved)), 1e-5, "state.db")
    assert fresh.rounds == rounds and fresh.epsilon(1e-5) == acc.epsilon(1e-5)
    with pytest.raises(DataError, match="spent epsilon"):
        restore_ledger(fresh, {**saved, "spent_epsilon": saved["spent_epsilon"] + tamper}, 1e-5, "state.db")
    other = DistributedAccountant(replace(stage, noise_multiplier=2.0).round_mechanism(100, 1.0))
    with pytest.raises(ConfigError, match="differs"):
        restore_ledger(other, saved, 1e-5, "state.db")
