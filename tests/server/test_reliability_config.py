"""The [server] reliability keys: defaults on, wrong types and impossible values refused with the key named."""

from __future__ import annotations

import pytest

from hamrah.core.errors import ConfigError
from hamrah.server.config import server_config


def test_protections_are_on_by_default():
    c = server_config({})
    assert c.bounded_influence and c.clip_multiplier >= 1 and c.max_round_attempts >= 1
    assert c.stream_timeout_s > 0 and c.rate_per_s > 0 and c.max_streams_per_device >= 1 and c.keep_last >= 1


@pytest.mark.parametrize(
    ("key", "value", "words"),
    [
        ("bounded_influence", "no", "true or false"),
        ("max_example_weight", -1, "max_example_weight"),
        ("clip_norm", -0.5, "clip_norm"),
        ("clip_multiplier", 0.5, ">= 1"),
        ("clip_window", 0, "clip_window"),
        ("max_round_attempts", 0, "max_round_attempts"),
        ("stream_timeout_s", 0, "stream_timeout_s"),
        ("max_streams_per_device", 0, "max_streams_per_device"),
        ("rate_per_s", float("inf"), "finite"),
        ("rate_burst", 0, "rate_burst"),
        ("keep_last", -1, "keep_last"),
        ("no_show_rounds", True, "integer"),
    ],
)
def test_wrong_reliability_settings_are_refused_naming_the_key(key, value, words):
    with pytest.raises(ConfigError, match=words):
        server_config({key: value})
