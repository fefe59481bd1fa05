"""The ``[server]`` section of a config: round protocol, actors, security, limits."""

from __future__ import annotations

import difflib
import math
import typing
from dataclasses import dataclass

from hamrah.aggregation import build_aggregator
from hamrah.core.config_read import shown, value_problem
from hamrah.core.errors import ConfigError

BACKENDS = ("asyncio", "ray")
MODES = ("cross_device", "cross_silo")
# Keys that make no sense when every site trains every round (cross_silo), with the reason.
_NOT_CROSS_SILO = {
    "goal_count": "the goal is every site; set server.sites (or list the sites in tokens_file)",
    "over_selection": "every site is asked every round; there is no one to over-select",
    "min_selected_fraction": "selection waits for every site still in the run; use min_reports",
    "selection_window_s": "there is no first-come window to draw from: every site is selected",
    "eval_devices": "every site trains every round; federated evaluation is site_eval_fraction",
    "no_show_rounds": "a site that misses a round is asked again in the next one",
}


@dataclass(frozen=True)
class ServerConfig:
    """How the server runs rounds (Bonawitz et al. 2019, section 4).

    Attributes:
        population: the population name devices check in for.
        goal_count: reports a round needs (None: the algorithm's cohort size for ``data.num_clients``).
        over_selection: select ``ceil(goal_count * over_selection)`` devices to absorb drop-outs.
        selection_timeout_s: how long selection waits for devices.
        min_selected_fraction: a round starts only with at least this fraction of the goal selected.
        reporting_timeout_s: how long the round waits for reports after selection.
        min_reports: fewest reports that commit a round (None: ceil(0.8 * goal_count)).
        selectors, aggregators: how many of each actor.
        checkin_hold_s: how long a check-in waits for a selection slot before being turned away.
        reconnect_min_s, reconnect_max_s: the range of reconnect times given to devices turned away.
        retry_delay_s: pause before retrying an abandoned round.
        max_update_mb: largest update accepted (0: twice the model's size plus 1 MB).
        tokens_file, revoked_file: device tokens, one per line.
        tls_cert, tls_key, client_ca: TLS files (client_ca set: mutual TLS).
        backend: the actor runtime, "asyncio" (one process) or "ray".
        aggregator: a robust aggregator for the server half, as a table ``{name = "median", ...}``
            (``hamrah.aggregation.build_aggregator``); None: the n_k-weighted mean.
        max_concurrent_uploads: updates received at once (bounds server memory; others wait).
        eval_devices: per round, this many extra devices evaluate the round's global model on their
            own data (federated evaluation; reported as ``device_accuracy``).
        secagg_stage_timeout_s: with ``[secure_aggregation]``, how long each protocol stage after the
            first waits for devices (the first, JOIN, is open until the reporting timeout).
        bounded_influence: bound each report's weight and norm (``hamrah.server.influence``); false only
            on explicit request, and the server then logs a warning at start.
        max_example_weight: the most ``num_examples`` one report counts for (0: the largest client of
            the configured partition).
        clip_norm: a fixed largest L2 norm a report's delta keeps (0: adaptive, see ``clip_multiplier``).
        clip_multiplier: when ``clip_norm`` is 0, each delta is clipped to this multiple of the median
            norm of the last ``clip_window`` reports (the first 3 reports of a run are held until 3
            norms are known): one report pulls at most as hard as ``clip_multiplier`` median reports,
            as long as most recent reports are honest.
        clip_window: how many recent report norms the median is taken over.
        max_round_attempts: a round abandoned this many times stops the server with a clear error.
        selection_window_s: check-ins arriving within this window are drawn from at random (seeded),
            not served first-come.
        no_show_rounds: a device that held a training task of a round that waited until its reporting
            deadline, and never answered, is not selected for this many rounds.
        stream_timeout_s: the longest a Report or DownloadCheckpoint stream may stay open; a stalled
            stream is cut and its upload slot freed.
        max_streams_per_device: streams (Report, DownloadCheckpoint, SecureAggregation) one device may
            hold open at once.
        rate_per_s, rate_burst: per-device token bucket on calls (refill rate and bucket size).
        keep_last: checkpoints kept besides the best one (0: keep every checkpoint).
        keep_best: also keep the checkpoint of the best test accuracy.
        mode: "cross_device" (a population of phones, sampled per round) or "cross_silo" (a handful
            of always-on sites, every site in every round, no over-selection, no eligibility checks;
            see docs/cross_silo.md).
        sites: cross_silo: the number of sites (None: the number of tokens in ``tokens_file``).
        test_set: false: the server holds no test set; rounds are scored only by federated evaluation.
        site_eval_fraction: cross_silo: each site holds out this fraction of its examples (a split fixed
            by the run's seed and its client key), scores the round's global model on it before
            training, and the server records the example-weighted mean (0: no federated evaluation).
    """

    population: str = "default"
    goal_count: int | None = None
    over_selection: float = 1.3
    selection_timeout_s: float = 30.0
    min_selected_fraction: float = 0.8
    reporting_timeout_s: float = 60.0
    min_reports: int | None = None
    selectors: int = 2
    aggregators: int = 2
    checkin_hold_s: float = 2.0
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 10.0
    retry_delay_s: float = 1.0
    max_update_mb: float = 0.0
    tokens_file: str | None = None
    revoked_file: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    client_ca: str | None = None
    backend: str = "asyncio"
    eval_devices: int = 0
    max_concurrent_uploads: int = 16
    aggregator: dict | None = None
    secagg_stage_timeout_s: float = 30.0
    bounded_influence: bool = True
    max_example_weight: int = 0
    clip_norm: float = 0.0
    clip_multiplier: float = 2.0
    clip_window: int = 64
    max_round_attempts: int = 20
    selection_window_s: float = 0.2
    no_show_rounds: int = 2
    stream_timeout_s: float = 120.0
    max_streams_per_device: int = 2
    rate_per_s: float = 20.0
    rate_burst: int = 40
    keep_last: int = 5
    keep_best: bool = True
    mode: str = "cross_device"
    sites: int | None = None
    test_set: bool = True
    site_eval_fraction: float = 0.0

    @property
    def cross_silo(self) -> bool:
        return self.mode == "cross_silo"

    def goal(self, default: int) -> int:
        return self.goal_count if self.goal_count is not None else default

    def selection_target(self, goal: int) -> int:
        if self.cross_silo:
            return goal
        return max(goal, math.ceil(goal * self.over_selection - 1e-9))

    def reports_needed(self, goal: int) -> int:
        if self.cross_silo:  # every site still in the run
            return self.min_reports if self.min_reports is not None else goal
        return self.min_reports if self.min_reports is not None else max(1, math.ceil(0.8 * goal))


def server_config(table: dict) -> ServerConfig:
    """Validate the ``[server]`` table.

    Raises:
        ConfigError: an unknown key, a wrong type, or an impossible value, naming it.
    """
    hints = typing.get_type_hints(ServerConfig)
    values = {}
    for key, value in table.items():
        if key not in hints:
            close = difflib.get_close_matches(key, list(hints), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"unknown key in [server] {key!r}{hint}; expected one of {', '.join(hints)}")
        values[key] = _coerce(f"server.{key}", value, hints[key])
    cfg = ServerConfig(**values)
    _check(cfg)
    _check_mode(cfg, set(table))
    return cfg


def _check_mode(c: ServerConfig, given: set[str]) -> None:
    """Refuse settings that make no sense in the chosen mode, with the reason."""
    if not c.population.strip():
        raise ConfigError("server.population = '': expected a name devices check in for (default \"default\")")
    if c.mode not in MODES:
        raise ConfigError(f"server.mode = {c.mode!r}: expected one of {', '.join(MODES)}")
    if not c.cross_silo:
        for key in ("sites", "site_eval_fraction"):
            if key in given:
                raise ConfigError(f'server.{key}: only with server.mode = "cross_silo"; expected it unset')
        return
    for key, why in _NOT_CROSS_SILO.items():
        if key in given:
            raise ConfigError(f'server.{key} with server.mode = "cross_silo": {why}; expected it unset')
    if c.sites is not None and c.sites < 1:
        raise ConfigError(f"server.sites = {c.sites!r}: expected an integer >= 1")
    if not 0.0 <= c.site_eval_fraction < 1.0:
        raise ConfigError(f"server.site_eval_fraction = {c.site_eval_fraction!r}: expected a fraction in [0, 1)")
    if c.sites is not None and c.min_reports is not None and c.min_reports > c.sites:
        raise ConfigError(f"server.min_reports = {c.min_reports}: expected at most server.sites ({c.sites})")


def site_count(c: ServerConfig, tokens: int | None) -> int:
    """Return a cross-silo run's number of sites: ``sites``, else the number of device tokens.

    Raises:
        ConfigError: neither gives a number, or they disagree.
    """
    if c.sites is None and tokens is None:
        raise ConfigError(
            'server.mode = "cross_silo" needs the number of sites: expected server.sites = N '
            "or a server.tokens_file listing one token per site"
        )
    if c.sites is not None and tokens is not None and tokens < c.sites:
        raise ConfigError(
            f"server.sites = {c.sites}: the tokens file lists only {tokens} devices; expected a token per site"
        )
    return c.sites if c.sites is not None else int(tokens or 0)


def _coerce(key: str, value, hint):
    args = typing.get_args(hint)
    base = next((a for a in args if a is not type(None)), hint) if args else hint
    names = {int: "an integer", float: "a number", str: "a string", dict: "a table", bool: "true or false"}
    why = value_problem(value)
    if why is not None:
        raise ConfigError(f"{key} = {shown(value)}: {why}")
    if base is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, base) or (base is int and isinstance(value, bool)):
        raise ConfigError(
            f"{key} = {shown(value)}: expected {names.get(base, base.__name__)}, got {type(value).__name__}"
        )
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{key} = {value!r}: expected a finite number")
    return value


def _check(c: ServerConfig) -> None:
    checks = [
        (c.goal_count is None or c.goal_count >= 1, "goal_count", c.goal_count, "an integer >= 1"),
        (c.over_selection >= 1.0, "over_selection", c.over_selection, "a number >= 1 (e.g. 1.3)"),
        (c.selection_timeout_s > 0, "selection_timeout_s", c.selection_timeout_s, "a positive number of seconds"),
        (0 < c.min_selected_fraction <= 1, "min_selected_fraction", c.min_selected_fraction, "a fraction in (0, 1]"),
        (c.reporting_timeout_s > 0, "reporting_timeout_s", c.reporting_timeout_s, "a positive number of seconds"),
        (c.min_reports is None or c.min_reports >= 1, "min_reports", c.min_reports, "an integer >= 1"),
        (c.selectors >= 1, "selectors", c.selectors, "an integer >= 1"),
        (c.aggregators >= 1, "aggregators", c.aggregators, "an integer >= 1"),
        (c.checkin_hold_s >= 0, "checkin_hold_s", c.checkin_hold_s, "a number >= 0"),
        (
            0 < c.reconnect_min_s <= c.reconnect_max_s,
            "reconnect_min_s",
            c.reconnect_min_s,
            "0 < reconnect_min_s <= reconnect_max_s",
        ),
        (c.retry_delay_s >= 0, "retry_delay_s", c.retry_delay_s, "a number >= 0"),
        (c.max_update_mb >= 0, "max_update_mb", c.max_update_mb, "a number >= 0 (0: automatic)"),
        (c.max_concurrent_uploads >= 1, "max_concurrent_uploads", c.max_concurrent_uploads, "an integer >= 1"),
        (c.eval_devices >= 0, "eval_devices", c.eval_devices, "an integer >= 0"),
        (
            c.secagg_stage_timeout_s > 0,
            "secagg_stage_timeout_s",
            c.secagg_stage_timeout_s,
            "a positive number of seconds",
        ),
        (c.max_example_weight >= 0, "max_example_weight", c.max_example_weight, "an integer >= 0 (0: automatic)"),
        (c.clip_norm >= 0, "clip_norm", c.clip_norm, "a number >= 0 (0: clip_ratio times the model's norm)"),
        (c.clip_multiplier >= 1, "clip_multiplier", c.clip_multiplier, "a number >= 1 (e.g. 2.0)"),
        (c.clip_window >= 1, "clip_window", c.clip_window, "an integer >= 1"),
        (c.max_round_attempts >= 1, "max_round_attempts", c.max_round_attempts, "an integer >= 1"),
        (c.selection_window_s >= 0, "selection_window_s", c.selection_window_s, "a number >= 0"),
        (c.no_show_rounds >= 0, "no_show_rounds", c.no_show_rounds, "an integer >= 0"),
        (c.stream_timeout_s > 0, "stream_timeout_s", c.stream_timeout_s, "a positive number of seconds"),
        (c.max_streams_per_device >= 1, "max_streams_per_device", c.max_streams_per_device, "an integer >= 1"),
        (c.rate_per_s > 0, "rate_per_s", c.rate_per_s, "a positive number of calls per second"),
        (c.rate_burst >= 1, "rate_burst", c.rate_burst, "an integer >= 1"),
        (c.keep_last >= 0, "keep_last", c.keep_last, "an integer >= 0 (0: keep every checkpoint)"),
        (c.backend in BACKENDS, "backend", c.backend, f"one of {', '.join(BACKENDS)}"),
        ((c.tls_cert is None) == (c.tls_key is None), "tls_cert", c.tls_cert, "tls_cert and tls_key set together"),
        (
            c.client_ca is None or c.tls_cert is not None,
            "client_ca",
            c.client_ca,
            "mutual TLS only with tls_cert and tls_key",
        ),
    ]
    for ok, key, value, expected in checks:
        if not ok:
            raise ConfigError(f"server.{key} = {value!r}: expected {expected}")
    if c.aggregator is not None:
        if "name" not in c.aggregator:
            raise ConfigError('server.aggregator: expected a table with a name, e.g. {name = "median"}')
        for k, v in c.aggregator.items():  # parameters are plain values (and a deep table's repr would fail)
            if isinstance(v, (dict, list)) or (isinstance(v, int) and not -(2**63) <= v < 2**63):
                raise ConfigError(f"server.aggregator.{k} = {shown(v)}: expected a number, a string or true/false")
        if getattr(build_aggregator(**c.aggregator), "needs_reference", False):
            raise ConfigError(
                f"server.aggregator = {c.aggregator['name']!r} needs the server's own update on a root "
                "data set each round, which the real server does not compute yet; expected an "
                "aggregator that needs only the reports (it runs in the simulator and the lab)"
            )
    if c.goal_count is not None and c.min_reports is not None and c.min_reports > c.goal_count:
        raise ConfigError(f"server.min_reports = {c.min_reports}: expected at most goal_count ({c.goal_count})")


__all__ = ["BACKENDS", "MODES", "ServerConfig", "server_config", "site_count"]
