"""How a device reaches its server (:class:`DeviceConfig`) and what it did (:class:`DeviceStats`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from hamrah.transport.backoff import RETRY_MAX_S


@dataclass(frozen=True)
class DeviceConfig:
    """How a device reaches its server.

    Attributes:
        server: ``host:port``.
        token: the device's authentication token.
        population: the population it trains for.
        device_id: a name for logs.
        client_key: the integer that seeds this device's local shuffles with the plan's seed and round
            (a simulated client's id makes a device run reproduce the simulator).
        signing_key: path of the device's Ed25519 signing key (``hamrah provision``); every call is then
            signed with a timestamp and a nonce (:mod:`hamrah.transport.identity`).
        tls_ca, tls_cert, tls_key: TLS trust anchor, and a client certificate for mutual TLS.
        poll_s: how often eligibility is checked while training.
        retry_s, max_retry_s: first and longest backoff while the server is unreachable (doubled per
            attempt, each sleep jittered in [d/2, d] so a fleet does not come back at once).
        unreachable_after_s: give up after the server has been unreachable this long (None: never).
        call_timeout_s: the longest one check-in, download or report may take: a server that accepts
            the connection and never answers (frozen, stalled) is then treated as unreachable.
        max_tasks: stop after this many tasks (None: until the server says training is over).
        max_checkpoint_mb: largest checkpoint accepted.
        max_example_epsilon: DP-SGD runs: the most example-level epsilon this device lets its store's
            examples spend over all runs (None: the plan's target only); a task past it is aborted.
    """

    server: str
    token: str | None = None
    population: str = "default"
    device_id: str = "device"
    client_key: int = 0
    signing_key: str | None = None
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    poll_s: float = 0.05
    retry_s: float = 0.5
    max_retry_s: float = RETRY_MAX_S
    unreachable_after_s: float | None = 600.0
    call_timeout_s: float = 120.0
    max_tasks: int | None = None
    max_checkpoint_mb: float = 1024.0
    max_example_epsilon: float | None = None


@dataclass
class DeviceStats:
    check_ins: int = 0
    finished: bool = False  # the server said training is over
    out_of_run: bool = False  # cross-silo: the server took this site out of the run (its task failed)
    tasks: int = 0
    reported: int = 0
    aborted: int = 0
    failed: int = 0
    refused: int = 0
    messages: list[str] = field(default_factory=list)
    last_round: int = 0  # the latest round this device got a task of
    total_rounds: int | None = None  # the run's rounds, as the plan says (for progress displays)
