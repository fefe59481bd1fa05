"""DPConfig validation and the privacy package's public API."""

from __future__ import annotations

import pytest

from hamrah import privacy
from hamrah.core.errors import ConfigError
from hamrah.privacy import AdaptiveClipConfig, DPConfig


def test_defaults_and_valid_configs():
    assert DPConfig(noise_multiplier=1.0).mode == "central"
    DPConfig(mode="local", noise_multiplier=0.0, target_epsilon=8.0)
    DPConfig(target_epsilon=2.0, sampling="fixed", adaptive=AdaptiveClipConfig(0.5, 0.2, 5.0))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(noise_multiplier=-0.5), "noise_multiplier = -0.5"),
        (dict(noise_multiplier=1.0, delta=1.0), "delta = 1.0: expected a number in \\(0, 1\\)"),
        (dict(noise_multiplier=1.0, delta=0), "delta"),
        (dict(noise_multiplier=1.0, clip=0), "clip = 0"),
        (dict(noise_multiplier=1.0, clip=True), "clip = True"),
        (dict(noise_multiplier=1.0, mode="global"), "central \\| local \\| dpsgd"),
        (dict(noise_multiplier=1.0, sampling="shuffle"), "poisson \\| fixed"),
        (dict(noise_multiplier=1.0, accountant="moments"), "rdp \\| pld"),
        (dict(target_epsilon=-1.0), "target_epsilon = -1.0"),
        (dict(), "one of the two is needed"),
        (dict(noise_multiplier=1.0, mode="local", adaptive=AdaptiveClipConfig()), "central"),
    ],
)
def test_bad_values_are_config_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        DPConfig(**kwargs)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(target_quantile=1.0), "target_quantile"),
        (dict(learning_rate=0.0), "learning_rate"),
        (dict(clip_count_stddev=-1.0), "clip_count_stddev"),
    ],
)
def test_bad_adaptive_values(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        AdaptiveClipConfig(**kwargs)


def test_configs_are_frozen():
    with pytest.raises(AttributeError):
        DPConfig(noise_multiplier=1.0).clip = 2.0  # type: ignore[misc]


def test_public_api():
    assert len(set(privacy.__all__)) == len(privacy.__all__)
    ns: dict = {}
    exec("from hamrah.privacy import *", ns)
    assert set(privacy.__all__) <= set(ns)
