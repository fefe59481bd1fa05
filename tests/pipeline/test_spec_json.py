"""The pipeline spec is typed sections parsed once, with one JSON codec: any valid spec survives
``to_json`` -> JSON text -> ``from_json`` unchanged, and a malformed plan is refused in one line."""

from __future__ import annotations

import dataclasses
import json

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from hamrah.core.errors import ConfigError
from hamrah.pipeline import (
    HalfCodec,
    MaskCodec,
    PipelineSpec,
    QuantizeCodec,
    SecureSpec,
    SignCodec,
    TopKCodec,
    resolve_pipeline,
)
from hamrah.privacy.config import AdaptiveClipConfig, DPConfig

finite = st.floats(0.05, 8.0, allow_nan=False, allow_infinity=False)
ring = st.builds(QuantizeCodec, st.sampled_from([2, 4, 8]), st.just("ring"), finite, st.none() | st.integers(1, 4096))
codecs = st.one_of(
    st.none(),
    ring,
    st.builds(QuantizeCodec, st.sampled_from([2, 4, 8]), st.sampled_from(["minmax", "qsgd"]), st.none()),
    st.builds(SignCodec, st.booleans()),
    st.builds(TopKCodec, st.floats(0.001, 1.0), st.booleans(), st.sampled_from(["float32", "float16"])),
    st.builds(MaskCodec, st.floats(0.01, 1.0), st.booleans()),
    st.sampled_from(["float16", "bfloat16"]).map(HalfCodec),
)
secures = st.builds(SecureSpec, st.sampled_from(["secagg", "secagg+"]), finite, st.integers(2, 32))


@st.composite
def dp_configs(draw: st.DrawFn, mode: str, cohort: int, population: int) -> DPConfig:
    budget = draw(st.booleans()) and mode != "distributed"
    sampling = "poisson" if mode == "distributed" else draw(st.sampled_from(["poisson", "fixed"]))
    fixed_rdp = mode in ("ftrl", "distributed") or (mode == "central" and sampling == "fixed")  # PLD cannot
    return DPConfig(
        mode,
        draw(finite),
        None if budget else draw(st.floats(0.0, 5.0)),
        draw(st.floats(0.5, 20.0)) if budget else None,
        draw(st.floats(1e-9, 0.1)),
        sampling,
        "rdp" if fixed_rdp else draw(st.sampled_from(["rdp", "pld"])),
        draw(st.none() | st.builds(AdaptiveClipConfig, st.floats(0.05, 0.95), finite, st.floats(20.0, 50.0)))
        if mode == "central"
        else None,
        draw(st.integers(1, population // cohort)) if mode == "ftrl" else None,
    )


@st.composite
def he_settings(draw: st.DrawFn, exact: bool):
    """Paillier, or (unless ``exact``: central noise needs a bounded rounding) CKKS."""
    from hamrah.he.stage import HESettings

    if exact or draw(st.booleans()):
        return HESettings(
            "paillier", key_bits=draw(st.sampled_from([1024, 2048])), precision_bits=draw(st.integers(8, 24))
        )
    return HESettings("ckks", poly_modulus_degree=8192, scale_bits=draw(st.integers(20, 40)))


@st.composite
def specs(draw: st.DrawFn) -> PipelineSpec:
    """A spec whose chain builds: each combination the resolver accepts, drawn directly (z need not match a budget)."""
    population = draw(st.integers(10, 10_000))
    cohort = draw(st.integers(1, population // 2))
    mode = draw(st.sampled_from([None, "central", "local", "ftrl", "distributed"]))
    dp = None if mode is None else draw(dp_configs(mode, cohort, population))
    sum_by = "secure" if mode == "distributed" else draw(st.sampled_from([None, None, "secure", "homomorphic"]))
    codec = None if mode == "distributed" else draw((ring | st.none()) if sum_by else codecs)
    secure = draw(secures) if sum_by == "secure" else None
    if mode == "distributed":
        secure = dataclasses.replace(secure, variant="secagg")
    he = draw(he_settings(mode in ("central", "ftrl"))) if sum_by == "homomorphic" else None
    key = draw(st.binary(min_size=1, max_size=64)) if he is not None and draw(st.booleans()) else None
    z = draw(st.floats(0.1, 10.0) if mode == "distributed" else st.floats(0.0, 10.0))
    spec = PipelineSpec(codec, dp, z, population, cohort, secure, he, key)
    if dp is not None and dp.adaptive is not None:  # sigma_b / s_b > z, s_b growing with a coarse secure sum
        try:
            spec.chain()
        except ConfigError:
            assume(False)
    return spec


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs())
def test_any_valid_spec_survives_a_json_round_trip(spec):
    spec.chain()  # valid: its chain builds
    data = spec.to_json()
    text = json.dumps(data, allow_nan=False)
    back = PipelineSpec.from_json(json.loads(text))
    assert back == spec
    assert back.public_key == spec.public_key  # compared explicitly: it is left out of repr
    assert json.dumps(back.to_json(), allow_nan=False) == text


def test_the_resolved_spec_holds_typed_sections():
    spec = resolve_pipeline(
        {"codec": "quantize", "bits": 4, "scheme": "ring", "range": 0.5},
        {"mode": "central", "clip": 1.0, "noise_multiplier": 1.0, "sampling": "fixed"},
        100,
        10,
        5,
        {"variant": "secagg+", "input_bits": 12},
    )
    assert spec.compression == QuantizeCodec(4, "ring", 0.5)
    assert spec.dp == DPConfig("central", 1.0, 1.0, sampling="fixed")
    assert spec.secure == SecureSpec("secagg+", input_bits=12)
    assert spec.chain().names == ("dp_clip", "quantize", "secagg", "dp_noise")
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.secure.clip = 2.0  # type: ignore[misc]


@pytest.mark.parametrize(
    "change,match",
    [
        ({"compression": {"codec": "quantize", "bits": 3}}, "compression: quantize bits = 3: expected 2, 4 or 8"),
        ({"compression": {"codec": "zip"}}, "compression.codec = 'zip': expected one of none, quantize"),
        ({"secure": {"variant": "secagg", "colour": 1}}, "secure_aggregation.colour: unknown setting"),
        ({"dp": {"mode": "central", "clip": -1.0, "noise_multiplier": 1.0}}, r"privacy.clip = -1.0: expected a"),
        ({"extra": 1}, "pipeline spec: unknown field 'extra'"),
        ({"cohort": "many"}, "pipeline spec: missing or malformed field"),
    ],
)
def test_a_malformed_plan_is_refused_in_one_line(change, match):
    data = {**PipelineSpec(QuantizeCodec(), cohort=2, population=4).to_json(), **change}
    with pytest.raises(ConfigError, match=match) as err:
        PipelineSpec.from_json(data)
    assert "\n" not in str(err.value)


def test_a_plan_without_a_field_is_refused():
    data = PipelineSpec().to_json()
    del data["secure"]
    with pytest.raises(ConfigError, match="pipeline spec: missing or malformed field"):
        PipelineSpec.from_json(data)
