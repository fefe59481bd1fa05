"""The epsilon hamrah charges, recomputed from what the code does, with dp-accounting called directly.

For each DP chain: read the sensitivity the client half enforces (what one client can add, measured
from its encoded payload) and the noise the server half adds (its multipliers), build the
dp-accounting event by hand, and compare with the epsilon the run reports. The adaptive case is the
review's: an expected cohort of 20 and sigma_b = 1 (with unshifted 0/1 bits the real multiplier was
0.756, epsilon 18.8 where hamrah charged 11.3).
"""

from __future__ import annotations

import dp_accounting
import numpy as np
import pytest
import torch
from dp_accounting import pld, rdp
from dp_accounting.privacy_accountant import NeighboringRelation

from hamrah.core.pipeline import ClientContext
from hamrah.pipeline import PipelineRun, resolve_pipeline
from hamrah.privacy.accounting import PLD_DISCRETIZATION
from hamrah.privacy.stages import CentralGaussianNoise, DPClip, LocalGaussian

TEMPLATE = {"w": torch.zeros(30)}
DELTA, ROUNDS = 1e-5, 100


def _bit_sensitivity(chain) -> float:
    """Return the largest |bit| any client sends (encode one clipped and one unclipped update)."""
    sstate = chain.init_server(TEMPLATE)
    out = 0.0
    for scale in (1e-3, 1e3):
        ctx = ClientContext(0, 0, np.random.default_rng(0), weight=1.0, num_clients=1)
        payload, _ = chain.encode({"w": torch.ones(30) * scale}, chain.init_client(TEMPLATE), ctx, sstate)
        decoded = chain.decode_client(payload, sstate)
        out = max([out] + [float(v.abs().max()) for k, v in decoded.items() if ":" in k])
    return out


def _direct_rdp(event, relation=NeighboringRelation.ADD_OR_REMOVE_ONE) -> float:
    acc = rdp.RdpAccountant(neighboring_relation=relation)
    return acc.compose(dp_accounting.SelfComposedDpEvent(event, ROUNDS)).get_epsilon(DELTA)


def _charged(spec) -> float:
    run = PipelineRun(spec, TEMPLATE)
    for _ in range(ROUNDS):
        eps = run.record_round()
    return eps


def test_adaptive_clipping_charges_the_multiplier_its_noise_and_bits_give():
    privacy = {
        "mode": "central",
        "clip": 1.0,
        "noise_multiplier": 1.0,
        "sampling": "poisson",
        "adaptive": {"clip_count_stddev": 1.0},
    }
    spec = resolve_pipeline(None, privacy, population=200, cohort=20, rounds=ROUNDS)
    chain = spec.chain()
    noise = next(s for s in chain.stages if isinstance(s, CentralGaussianNoise))
    s_b = _bit_sensitivity(chain)
    z_delta, sigma_b = noise.clipper().update_noise_multiplier(), noise.clipper().clip_count_stddev
    z_real = (z_delta**-2 + (sigma_b / s_b) ** -2) ** -0.5  # update: sensitivity C, std z_Delta C
    assert s_b == 0.5  # shifted bits (with 0/1 bits this is 1 and z_real = 0.756)
    assert z_real == pytest.approx(1.0, rel=1e-9)
    direct = _direct_rdp(dp_accounting.PoissonSampledDpEvent(0.1, dp_accounting.GaussianDpEvent(z_real)))
    assert _charged(spec) == pytest.approx(direct, rel=1e-6)


def test_the_update_noise_the_stage_adds_has_std_z_delta_c_over_the_cohort():
    noise = CentralGaussianNoise(
        1.0,
        1.0,
        20.0,
        resolve_pipeline(
            None,
            {"mode": "central", "clip": 1.0, "noise_multiplier": 1.0, "adaptive": {"clip_count_stddev": 1.0}},
            200,
            20,
            10,
        ).dp.adaptive,
    )
    from hamrah.core.pipeline import ServerContext
    from hamrah.privacy.adaptive import AdaptiveClipState

    agg = {"w": torch.zeros(200_000), "dp_clip:unclipped": torch.zeros(1)}
    out, _ = noise.server(agg, AdaptiveClipState(1.0), ServerContext(0, 20, np.random.default_rng(0)))
    want = noise.clipper().update_noise_multiplier() * 1.0 / 20.0
    assert float(out["w"].std()) == pytest.approx(want, rel=0.01)  # 2e5 draws: std error 0.16%


@pytest.mark.parametrize("sampling", ["poisson", "fixed"])
def test_central_dp_charges_what_dp_accounting_gives_for_the_enforced_sensitivity(sampling):
    privacy = {"mode": "central", "clip": 0.7, "noise_multiplier": 1.3, "sampling": sampling}
    spec = resolve_pipeline({"codec": "quantize", "bits": 2}, privacy, population=200, cohort=20, rounds=ROUNDS)
    chain = spec.chain()
    clip, noise = chain.stages[0], chain.stages[-1]
    assert isinstance(clip, DPClip) and isinstance(noise, CentralGaussianNoise)
    # the noise std on the sum is z * C for a per-client bound C (the server's re-clip enforces C exactly)
    z = noise.noise_multiplier
    if sampling == "poisson":
        event = dp_accounting.PoissonSampledDpEvent(0.1, dp_accounting.GaussianDpEvent(z))
        direct = _direct_rdp(event)
    else:  # replace-one: the sum moves by up to 2C
        event = dp_accounting.SampledWithoutReplacementDpEvent(200, 20, dp_accounting.GaussianDpEvent(z / 2))
        direct = _direct_rdp(event, NeighboringRelation.REPLACE_ONE)
    assert _charged(spec) == pytest.approx(direct, rel=1e-6)


def test_local_dp_charges_a_replace_one_gaussian_of_sensitivity_2s():
    spec = resolve_pipeline(None, {"mode": "local", "clip": 1.0, "noise_multiplier": 5.0}, 200, 20, ROUNDS)
    assert isinstance(spec.chain().stages[0], LocalGaussian)
    direct = _direct_rdp(dp_accounting.GaussianDpEvent(5.0 / 2), NeighboringRelation.REPLACE_ONE)
    assert _charged(spec) == pytest.approx(direct, rel=1e-6)


def test_pld_discretisation_is_an_upper_bound_within_the_documented_gap():
    """accounting.PLD_DISCRETIZATION's comment: pessimistic, +3% at q = 1e-3, z = 1, 1000 rounds, delta 1e-6."""
    ev = dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(1e-3, dp_accounting.GaussianDpEvent(1.0)), 1000
    )
    coarse, fine = (
        pld.PLDAccountant(NeighboringRelation.ADD_OR_REMOVE_ONE, value_discretization_interval=d)
        .compose(ev)
        .get_epsilon(1e-6)
        for d in (PLD_DISCRETIZATION, 1e-4)
    )
    assert fine <= coarse <= fine * 1.04
    assert coarse == pytest.approx(0.1913, abs=5e-4) and fine == pytest.approx(0.1856, abs=5e-4)
