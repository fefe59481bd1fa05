import pytest

from hamrah.core.errors import ConfigError
from hamrah.server.config import ServerConfig, server_config


def test_defaults_and_derived_counts():
    c = server_config({"goal_count": 10})
    assert c.selection_target(10) == 13 and c.reports_needed(10) == 8
    assert ServerConfig().backend == "asyncio"


@pytest.mark.parametrize(
    "table, message",
    [
        ({"goal_cont": 3}, "did you mean 'goal_count'"),
        ({"over_selection": 0.5}, "server.over_selection = 0.5: expected a number >= 1"),
        ({"goal_count": "ten"}, "expected an integer, got str"),
        ({"goal_count": 5, "min_reports": 6}, "at most goal_count"),
        ({"backend": "spark"}, "one of asyncio, ray"),
        ({"tls_cert": "a.pem"}, "tls_cert and tls_key set together"),
        ({"reporting_timeout_s": float("inf")}, "finite"),
        ({"population": " "}, "server.population = '': expected a name devices check in for"),
    ],
)
def test_bad_values_are_refused_with_the_key(table, message):
    with pytest.raises(
        ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.").replace("[", r"\[")
    ):
        server_config(table)


def test_an_aggregator_that_needs_a_server_root_set_is_refused_on_the_server():
    with pytest.raises(ConfigError, match="'fltrust' needs the server's own update"):
        server_config({"aggregator": {"name": "fltrust"}})
