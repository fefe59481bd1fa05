"""The sensitivity the accountant assumes is the one the code enforces, for every DP chain.

For every codec and setting the config accepts together with central DP (with and without adaptive
clipping, error feedback over several rounds of a steady update direction, with and without secure
aggregation), one client's contribution *as the server adds it* has model norm <= C and a bit of
magnitude <= the bit sensitivity the noise stage was calibrated to; and the pair (z_Delta on the
update, sigma_b on the count) composes to exactly the z the accountant charges.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hamrah.core.errors import ConfigError
from hamrah.core.pipeline import ClientContext
from hamrah.pipeline import PipelineRun, resolve_pipeline
from hamrah.privacy.stages import CentralGaussianNoise, DPClip, _is_model_key
from hamrah.secagg.ring import dequantize_sum, quantize, ring_dtype
from hamrah.secagg.stage import SecureAggregation

TEMPLATE = {"w": torch.zeros(6, 7), "b": torch.zeros(5)}  # d = 47
TOL = 1e-5  # float32 rounding of a rescaled vector


def _codecs(secure: bool) -> st.SearchStrategy[dict]:
    ring = st.fixed_dictionaries(
        {
            "codec": st.just("quantize"),
            "scheme": st.just("ring"),
            "bits": st.sampled_from([8]),
            "range": st.sampled_from([0.5, 1.0, 2.0]),
        }
    )
    if secure:
        return st.one_of(st.just({"codec": "none"}), ring)
    bucket = st.sampled_from([None, 4, 16])
    return st.one_of(
        st.just({"codec": "none"}),
        st.just({"codec": "float16"}),
        st.just({"codec": "bfloat16"}),
        st.fixed_dictionaries(
            {
                "codec": st.just("quantize"),
                "bits": st.sampled_from([2, 4, 8]),
                "scheme": st.sampled_from(["minmax", "qsgd"]),
                "bucket": bucket,
            }
        ),
        st.fixed_dictionaries(
            {
                "codec": st.just("quantize"),
                "scheme": st.just("ring"),
                "bits": st.sampled_from([2, 4, 8]),
                "range": st.sampled_from([0.05, 0.5, 2.0]),
            }
        ),
        st.fixed_dictionaries({"codec": st.just("sign"), "error_feedback": st.booleans()}),
        st.fixed_dictionaries(
            {
                "codec": st.just("topk"),
                "fraction": st.sampled_from([0.01, 0.1, 0.5]),
                "error_feedback": st.booleans(),
                "value_dtype": st.sampled_from(["float32", "float16"]),
            }
        ),
        st.fixed_dictionaries(
            {"codec": st.just("mask"), "p": st.sampled_from([0.01, 0.1, 0.5]), "shared": st.booleans()}
        ),
    )


@st.composite
def chains(draw):
    """A central-DP pipeline the config accepts: codec, adaptive or not, secure sum or not."""
    secure = draw(st.booleans())
    compression = {k: v for k, v in draw(_codecs(secure)).items() if v is not None}
    clip = draw(st.sampled_from([0.05, 0.3, 1.0, 5.0]))
    if draw(st.booleans()):  # DP-FTRL: the same clip stage, tree noise instead of per-round noise
        privacy = {"mode": "ftrl", "clip": clip, "noise_multiplier": 1.0, "tree_rounds": 5}
    else:
        privacy = {"mode": "central", "clip": clip, "noise_multiplier": 1.0, "sampling": "fixed"}
        if draw(st.booleans()):
            privacy["adaptive"] = {"clip_count_stddev": 2.0}
    sec = (
        {
            "variant": "secagg",
            "clip": draw(st.sampled_from([0.5, 1.0, 4.0])),
            "input_bits": draw(st.sampled_from([12, 16, 24])),
        }
        if secure
        else None
    )
    try:
        spec = resolve_pipeline(compression, privacy, population=100, cohort=10, rounds=10, secure=sec)
    except ConfigError:
        return None  # refused at config time: nothing to check
    return spec


def _secure_view(chain, payload) -> dict[str, torch.Tensor]:
    """Return what one client adds to the secure sum: its input after SecAgg's fixed-point rounding."""
    sec = chain.stages[chain.secure_sum]
    out = {}
    for name, v in payload.params.items():
        x = v.detach().double().reshape(-1).numpy()
        q = quantize(x, sec.clip, sec.input_bits, ring_dtype(sec.input_bits + 1))
        out[name] = torch.from_numpy(dequantize_sum(q, 1, sec.clip, sec.input_bits)).reshape(v.shape)
    return out


def _norm(update) -> float:
    model = [v.double().reshape(-1) for k, v in update.items() if _is_model_key(k)]
    return float(torch.linalg.vector_norm(torch.cat(model)))


@settings(max_examples=60, deadline=None)
@given(spec=chains(), scale=st.floats(0.01, 100.0), rounds=st.integers(1, 4), seed=st.integers(0, 2**16))
def test_every_accepted_central_chain_bounds_each_decoded_contribution(spec, scale, rounds, seed):
    if spec is None:
        return
    chain = spec.chain()
    clip_stage = next(s for s in chain.stages if isinstance(s, DPClip))
    noise = next((s for s in chain.stages if isinstance(s, CentralGaussianNoise)), None)
    sstate = chain.init_server(TEMPLATE)
    if clip_stage.adaptive:  # any norm the server may broadcast (>= the floor it keeps under a secure sum)
        i = chain.stages.index(clip_stage)
        floor = 2 * clip_stage.margin(47)
        sstate = tuple(
            x if j != i else type(x)(max(clip_stage.clip * scale**0.5 / 10, floor * 1.01)) for j, x in enumerate(sstate)
        )
    c = clip_stage.current_clip(sstate[chain.stages.index(clip_stage)])
    if not c > clip_stage.margin(47):  # the rounding alone could exceed C: refused before round 1
        with pytest.raises(ConfigError, match="fixed-point rounding"):
            PipelineRun(spec, TEMPLATE)
        return
    g = torch.Generator().manual_seed(seed)
    direction = {k: torch.randn(v.shape, generator=g) for k, v in TEMPLATE.items()}  # steady: EF accumulates
    state = chain.init_client(TEMPLATE)
    adaptive = noise is not None and noise.adaptive is not None
    bit_bound = noise.clipper().bit_sensitivity if adaptive else 0.0
    for r in range(rounds):
        update = {k: v * scale + 0.01 * scale * torch.randn(v.shape, generator=g) for k, v in direction.items()}
        ctx = ClientContext(0, r, np.random.default_rng([seed, r]), round_seed=seed + r, weight=1.0, num_clients=1)
        payload, state = chain.encode(update, state, ctx, sstate)
        if chain.secure_sum is None:
            seen = chain.decode_client(chain.wire_stage().read(payload.to_bytes(), _spec(chain, sstate)), sstate)
        else:
            seen = _secure_view(chain, payload)
        assert _norm(seen) <= c * (1 + TOL) + 1e-7, (spec.compression, r, _norm(seen), c)
        bits = [float(v.abs().max()) for k, v in seen.items() if not _is_model_key(k)]
        assert all(b <= bit_bound + 1e-6 for b in bits)
        assert bool(bits) == adaptive


def _spec(chain, sstate):
    from hamrah.core.pipeline import wire_spec

    return wire_spec(chain, TEMPLATE, sstate)


@settings(max_examples=40, deadline=None)
@given(
    z=st.floats(0.1, 5.0),
    cohort=st.floats(2.0, 1000.0),
    ratio=st.floats(1.01, 20.0),
    error=st.sampled_from([0.0, 1e-5, 0.01]),
)
def test_update_and_count_noise_compose_to_the_charged_multiplier(z, cohort, ratio, error):
    """Andrew et al. 2021, Theorem 1 with the bit sensitivity the stage assumes: the charged z is exact."""
    sb = ratio * z * (0.5 + error)  # sigma_b / s_b = ratio * z > z: accepted
    from hamrah.privacy import AdaptiveClipConfig

    noise = CentralGaussianNoise(z, 1.0, cohort, AdaptiveClipConfig(clip_count_stddev=sb), decode_error=error)
    clipper = noise.clipper()
    z_delta = clipper.update_noise_multiplier()
    s_b = clipper.bit_sensitivity
    assert s_b == pytest.approx(0.5 + error)
    assert (z_delta**-2 + (sb / s_b) ** -2) ** -0.5 == pytest.approx(z, rel=1e-9)


def test_a_clip_below_the_secure_sums_rounding_margin_is_refused_before_round_one():
    big = {"w": torch.zeros(100_000)}
    spec = resolve_pipeline(
        None,
        {"mode": "central", "clip": 0.001, "noise_multiplier": 1.0, "sampling": "fixed"},
        100,
        10,
        10,
        secure={"variant": "secagg", "clip": 1.0, "input_bits": 8},
    )
    with pytest.raises(ConfigError, match="not above .* fixed-point rounding"):
        PipelineRun(spec, big)


def test_margin_is_the_secagg_rounding_bound_times_sqrt_d():
    spec = resolve_pipeline(
        None,
        {"mode": "central", "clip": 1.0, "noise_multiplier": 1.0, "sampling": "fixed"},
        100,
        10,
        10,
        secure={"variant": "secagg", "clip": 2.0, "input_bits": 16},
    )
    clip = spec.chain().stages[0]
    assert isinstance(spec.chain().stages[1], SecureAggregation)
    assert clip.margin(400) == pytest.approx(2.0 / 65535 * math.sqrt(400))


@settings(max_examples=50, deadline=None)
@given(clip=st.floats(1e-3, 1e3), scale=st.floats(1e-3, 1e4), seed=st.integers(0, 2**16))
def test_local_dp_clips_to_s_before_its_noise(clip, scale, seed):
    """Local DP is accounted as a replace-one Gaussian of sensitivity 2S: the release without noise is <= S."""
    from hamrah.privacy import local_dp_release

    g = torch.Generator().manual_seed(seed)
    update = {k: torch.randn(v.shape, generator=g) * scale for k, v in TEMPLATE.items()}
    released = local_dp_release(update, clip, 0.0, torch.Generator().manual_seed(0))
    assert _norm(released) <= clip * (1 + TOL)
