"""Property tests of the guarantees docs/dp.md states, over arbitrary inputs (hypothesis).

- DP-SGD: per-example clipping bounds what any one example adds to a step's gradient sum by S, whatever
  its gradient (huge, tiny, zero), so adding or removing one example moves the noised mean by at most
  S / B before the noise; and the batches local training runs are the events the ledger charges (as
  many Poisson steps at q = B/n; shuffled batches disjoint within each pass charged).
- Central DP-FedAvg: through the stages that actually run (:func:`process_round` with ``DPClip`` and
  ``CentralGaussianNoise`` at z = 0), adding one client of any update norm to any cohort moves the
  released aggregate by at most S / D (D the expected cohort), as the noise z S / D assumes.
- The budget ledger never lets epsilon pass the target and stops exactly at the last round that fits.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hamrah.algorithms import LocalSGD
from hamrah.algorithms.base import ExampleDP
from hamrah.algorithms.dpsgd import clip_per_example, noisy_mean_gradient, poisson_batches, privacy_events
from hamrah.algorithms.local import batch_schedule
from hamrah.core.errors import BudgetExhausted
from hamrah.core.pipeline import Chain, process_round
from hamrah.privacy import BudgetLedger, PrivacyAccountant, RoundSpec
from hamrah.privacy.mechanisms import l2_norm
from hamrah.privacy.stages import CentralGaussianNoise, DPClip

TOL = 1e-5  # float32 rounding of a rescaled vector

scales = st.sampled_from([0.0, 1e-30, 1e-6, 1e-2, 1.0, 30.0, 1e6, 1e15])


@st.composite
def example_grads(draw) -> dict[str, torch.Tensor]:
    """Per-example gradients of 1-6 examples, each of an arbitrary norm (zero included)."""
    b = draw(st.integers(1, 6))
    seed = draw(st.integers(0, 2**31))
    g = torch.Generator().manual_seed(seed)
    norms = torch.tensor([draw(scales) for _ in range(b)])
    w, c = torch.randn(b, 3, 4, generator=g), torch.randn(b, 2, generator=g)
    return {"w": w * norms.view(b, 1, 1), "c": c * norms.view(b, 1)}


@settings(max_examples=150, deadline=None)
@given(example_grads(), st.floats(1e-3, 1e3), st.data())
def test_dpsgd_one_example_moves_the_clipped_sum_by_at_most_s(grads, clip, data):
    summed, _ = clip_per_example(grads, clip)
    b = next(iter(grads.values())).shape[0]
    i = data.draw(st.integers(0, b - 1))
    without = {k: torch.cat([v[:i], v[i + 1 :]]) for k, v in grads.items()}
    rest, _ = clip_per_example(without, clip) if b > 1 else ({k: torch.zeros_like(v[0]) for k, v in grads.items()}, 0)
    moved = l2_norm({k: summed[k].double() - rest[k].double() for k in summed})
    assert moved <= clip * (1 + TOL)
    # the step the optimizer takes, without noise: one example moves it by at most S / B
    denominator = data.draw(st.floats(1.0, 64.0))
    g = torch.Generator().manual_seed(0)
    full = noisy_mean_gradient(grads, clip, 0.0, denominator, g)
    less = noisy_mean_gradient(without, clip, 0.0, denominator, g) if b > 1 else rest
    if b == 1:
        less = {k: v / denominator for k, v in rest.items()}
    assert l2_norm({k: full[k].double() - less[k].double() for k in full}) <= clip / denominator * (1 + TOL)


plans = st.builds(
    lambda e, b, steps, poisson: LocalSGD(e, b, 0.1, num_steps=steps, example_dp=ExampleDP(1.0, 1.0, poisson)),
    st.integers(1, 3),
    st.one_of(st.none(), st.integers(1, 40)),
    st.one_of(st.none(), st.integers(1, 30)),
    st.booleans(),
)


@settings(max_examples=150, deadline=None)
@given(plans, st.integers(1, 120), st.integers(0, 2**31))
def test_dpsgd_batches_are_the_events_charged(plan, n, seed):
    (spec, count), *more = privacy_events(plan, n)
    assert not more
    rng = np.random.default_rng(seed)
    if plan.example_dp.poisson:
        batches = poisson_batches(n, plan, rng)
        b = n if plan.batch_size is None else plan.batch_size
        assert spec == RoundSpec.poisson(1.0, min(1.0, b / n))
        assert len(batches) == count  # every step (an empty batch too) is one sampled Gaussian charged
        return
    batches = batch_schedule(n, plan, rng)
    assert spec == RoundSpec.unsampled(1.0)
    b = n if plan.batch_size is None else plan.batch_size
    per_pass = math.ceil(n / b)
    passes = [batches[i : i + per_pass] for i in range(0, len(batches), per_pass)]
    assert len(passes) <= count  # each begun pass is one Gaussian of sensitivity 2S charged
    for p in passes:  # within a pass every example is in at most one batch
        seen = np.concatenate(p)
        assert len(seen) == len(np.unique(seen))


@st.composite
def cohorts(draw) -> tuple[list[dict[str, torch.Tensor]], dict[str, torch.Tensor]]:
    m = draw(st.integers(0, 5))
    seed = draw(st.integers(0, 2**31))
    g = torch.Generator().manual_seed(seed)

    def one() -> dict[str, torch.Tensor]:
        s = draw(scales)
        return {"w": torch.randn(3, 4, generator=g) * s, "b": torch.randn(2, generator=g) * s}

    return [one() for _ in range(m)], one()


def _released(chain: Chain, updates: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    ids = range(len(updates))
    out = process_round(
        chain,
        dict(zip(ids, updates)),
        dict.fromkeys(ids, 1.0),
        {},
        {k: np.random.default_rng(k) for k in ids},
        server_rng=np.random.default_rng(0),
        template={"w": torch.zeros(3, 4), "b": torch.zeros(2)},
    )
    return out.aggregate


@settings(max_examples=120, deadline=None)
@given(cohorts(), st.floats(1e-3, 1e3), st.floats(0.5, 50.0))
def test_central_dp_one_client_moves_the_release_by_at_most_s_over_d(cohort, clip, expected):
    others, extra = cohort
    chain = Chain([DPClip(clip), CentralGaussianNoise(0.0, clip, expected)])
    without, with_one = _released(chain, others), _released(chain, [*others, extra])
    moved = l2_norm({k: with_one[k].double() - without[k].double() for k in with_one})
    assert moved <= clip / expected * (1 + 1e-4) + 1e-6 * clip


@settings(max_examples=25, deadline=None)
@given(
    st.floats(0.5, 3.0),
    st.sampled_from([0.01, 0.05, 0.2, 1.0]),
    st.floats(0.5, 6.0),
    st.sampled_from([1e-6, 1e-5, 1e-3]),
)
def test_the_ledger_stops_at_the_last_round_that_fits(z, q, target, delta):
    spec = RoundSpec.poisson(z, q)
    ledger = BudgetLedger(target, delta, spec)
    fits = PrivacyAccountant(spec).rounds_possible(target, delta, limit=400)
    if fits >= 400:
        return  # too many rounds to walk in a test
    for _ in range(fits):
        ledger.check_round()
        assert ledger.record_round() <= target
    with pytest.raises(BudgetExhausted):
        ledger.check_round()
    assert ledger.spent() <= target < PrivacyAccountant(spec).epsilon(delta, fits + 1)
