"""Accounting with dp-accounting: published anchors, RDP against PLD, monotonicity, search, calibration."""

from __future__ import annotations

import math

import dp_accounting
import numpy as np
import pytest
from dp_accounting.privacy_accountant import NeighboringRelation

from hamrah.core.errors import ConfigError
from hamrah.privacy import DPConfig, PrivacyAccountant, RoundSpec, epsilon_of
from hamrah.privacy.accounting import _rdp_curve

DELTA = 1e-5


def test_abadi_mnist_anchor():
    # Abadi et al. 2016, Sec. 5 (MNIST): q = 0.01, sigma = 4, 10,000 steps, delta = 1e-5 -> epsilon ~ 1.26
    # with the moments accountant. Its tail bound is the classic RDP conversion
    # eps = min_a RDP(a) + log(1/delta) / (a - 1), which on dp-accounting's curve gives 1.2586.
    # dp-accounting's own conversion (Canonne, Kamath, Steinke 2020) is tighter: 1.0355 (v0.6).
    spec = RoundSpec.poisson(4.0, 0.01)
    orders, curve = _rdp_curve(spec)
    classic = float(np.min(10_000 * curve + math.log(1 / DELTA) / (orders - 1)))
    assert classic == pytest.approx(1.26, abs=0.01)
    assert epsilon_of([(spec, 10_000)], DELTA, "rdp") == pytest.approx(1.0355, abs=0.002)


def test_rdp_and_pld_agree_and_pld_is_tighter():
    for spec, rounds in [(RoundSpec.poisson(4.0, 0.01), 10_000), (RoundSpec.poisson(1.0, 0.01), 1000)]:
        rdp = epsilon_of([(spec, rounds)], DELTA, "rdp")
        pld = epsilon_of([(spec, rounds)], DELTA, "pld")
        assert 0.75 * rdp < pld <= rdp * 1.001, (spec, rdp, pld)


def test_epsilon_grows_with_rounds_and_q_and_falls_with_z():
    def e(z: float, q: float, n: int) -> float:
        return epsilon_of([(RoundSpec.poisson(z, q), n)], DELTA)

    assert e(1.0, 0.01, 10) < e(1.0, 0.01, 100) < e(1.0, 0.01, 1000)
    assert e(1.0, 0.01, 100) < e(1.0, 0.05, 100) < e(1.0, 0.2, 100)
    assert e(2.0, 0.01, 100) < e(1.0, 0.01, 100) < e(0.7, 0.01, 100)
    assert epsilon_of([], DELTA) == 0.0


def test_fixed_size_sampling_is_replace_one_with_half_the_multiplier():
    # m = K (no amplification) must equal one Gaussian of multiplier z/2 (replace-one moves the sum by 2S).
    full = epsilon_of([(RoundSpec.fixed(2.0, 50, 50), 3)], DELTA)
    plain = rdp_gaussian_epsilon(1.0, 3)
    assert full == pytest.approx(plain, rel=1e-6)
    assert RoundSpec.fixed(2.0, 5, 50).relation is NeighboringRelation.REPLACE_ONE
    assert epsilon_of([(RoundSpec.fixed(2.0, 5, 50), 3)], DELTA) < full  # sampling amplifies


def rdp_gaussian_epsilon(sigma: float, count: int) -> float:
    acc = dp_accounting.rdp.RdpAccountant()
    return acc.compose(dp_accounting.GaussianDpEvent(sigma), count).get_epsilon(DELTA)


def test_local_release_is_a_gaussian_of_half_the_multiplier():
    assert epsilon_of([(RoundSpec.unsampled(4.0), 1)], DELTA) == pytest.approx(rdp_gaussian_epsilon(2.0, 1))


def test_pld_cannot_account_fixed_size_sampling():
    with pytest.raises(ConfigError, match="does not support fixed sampling"):
        epsilon_of([(RoundSpec.fixed(1.0, 10, 100), 1)], DELTA, "pld")
    with pytest.raises(ConfigError, match="does not support sampling without replacement"):
        DPConfig(noise_multiplier=1.0, sampling="fixed", accountant="pld")


def test_mixing_neighbouring_relations_is_refused():
    with pytest.raises(ConfigError, match="mix Poisson"):
        epsilon_of([(RoundSpec.poisson(1.0, 0.1), 1), (RoundSpec.fixed(1.0, 10, 100), 1)], DELTA)


def test_step_and_rounds_possible():
    acc = PrivacyAccountant(RoundSpec.poisson(1.0, 0.01))
    n = acc.rounds_possible(2.0, DELTA)
    assert acc.epsilon(DELTA, n) <= 2.0 < acc.epsilon(DELTA, n + 1)
    acc.step(100)
    acc.step(2, RoundSpec.poisson(1.0, 0.02))
    assert acc.rounds == 102
    assert acc.history == [(RoundSpec.poisson(1.0, 0.01), 100), (RoundSpec.poisson(1.0, 0.02), 2)]
    assert acc.rounds_possible(2.0, DELTA) < n - 100


def test_noise_for_meets_the_target_tightly():
    for method in ("rdp", "pld"):
        acc = PrivacyAccountant(RoundSpec.poisson(1.0, 0.01), method)
        z = acc.noise_for(2.0, DELTA, rounds=500)
        got = PrivacyAccountant(RoundSpec.poisson(z, 0.01), method).epsilon(DELTA, 500)
        assert 1.98 < got <= 2.0, (method, z, got)


def test_noise_for_a_spent_budget_is_refused():
    acc = PrivacyAccountant(RoundSpec.poisson(0.5, 0.5))
    acc.step(50)
    with pytest.raises(ConfigError, match="already spent"):
        acc.noise_for(1.0, DELTA, rounds=10)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(noise_multiplier=-1.0), "noise_multiplier = -1.0"),
        (dict(noise_multiplier=float("nan")), "noise_multiplier"),
        (dict(sampling="poisson", sampling_probability=0.0), "0 < q <= 1"),
        (dict(sampling="fixed", population=10, cohort=11), "1 <= m <= K"),
        (dict(sampling="shuffle"), "poisson \\| fixed \\| none"),
    ],
)
def test_round_spec_validation(kwargs, match):
    args = dict(noise_multiplier=1.0) | kwargs
    with pytest.raises(ConfigError, match=match):
        RoundSpec(**args)


@pytest.mark.parametrize("z", [1.0, 5.0, 50.0])
def test_local_release_pld_matches_the_exact_gaussian_mechanism(z):
    # One release, sensitivity 2S, std z*S: exact epsilon of the Gaussian mechanism with sigma = z/2
    # (Balle & Wang 2018, dp-accounting's get_epsilon_gaussian). PLD is tight; RDP is an upper bound.
    exact = dp_accounting.get_epsilon_gaussian(z / 2, DELTA)
    pld = epsilon_of([(RoundSpec.unsampled(z), 1)], DELTA, "pld")
    assert pld == pytest.approx(exact, rel=1e-3)
    assert epsilon_of([(RoundSpec.unsampled(z), 1)], DELTA, "rdp") >= pld


def test_dp_accountings_convergence_notes_are_not_printed(caplog):
    """A 5-round DP run printed ~140 absl "failed to converge" warnings (low RDP orders at small z)."""
    import dp_accounting
    from dp_accounting import rdp

    import hamrah.privacy.accounting  # noqa: F401  (installs the filter)

    acc = rdp.RdpAccountant()
    acc.compose(dp_accounting.PoissonSampledDpEvent(0.1, dp_accounting.GaussianDpEvent(0.5049)), 5)
    with caplog.at_level("WARNING"):
        assert math.isfinite(acc.get_epsilon(1e-5))
    assert not [r for r in caplog.records if "failed to converge" in r.getMessage()]
