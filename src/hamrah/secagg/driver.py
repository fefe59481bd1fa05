"""A synchronous in-memory driver of secure aggregation, for the simulator, tests and benchmarks.

It runs :class:`SecAggClient` and :class:`SecAggServer` through the four rounds of Bonawitz et al.
2017 (CCS), passing every message through its wire form (``to_bytes`` / ``from_bytes``) so that byte
counts are exact, and drops the clients it is told to drop at each stage.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from hamrah.core.errors import ConfigError
from hamrah.secagg.active import ActiveSecAggClient, ActiveSecAggServer, identity_public_key
from hamrah.secagg.client import SecAggClient
from hamrah.secagg.config import SecAggConfig
from hamrah.secagg.crypto import DeterministicRandom
from hamrah.secagg.messages import decode
from hamrah.secagg.server import STAGES, AggregateResult, SecAggServer


@dataclass(frozen=True)
class SecAggRun:
    """What one driven round produced and cost.

    Attributes:
        result: the server's outcome (``result.sum`` is the dequantized sum over ``result.contributors``).
        client_bytes_sent, client_bytes_received: per client, the wire bytes of its messages either way.
        server_bytes_sent, server_bytes_received: totals at the server.
        client_seconds: per client, the time spent in its four methods (None without a clock).
        server_seconds: the time spent in the server's methods (None without a clock).
    """

    result: AggregateResult
    client_bytes_sent: np.ndarray
    client_bytes_received: np.ndarray
    server_bytes_sent: int
    server_bytes_received: int
    client_seconds: np.ndarray | None
    server_seconds: float | None

    @property
    def sum(self) -> np.ndarray:
        """The dequantized sum of the contributors' inputs."""
        return self.result.sum


class _Meter:
    def __init__(self, n: int, clock):
        self.clock, self.sent, self.recv = clock, np.zeros(n, np.int64), np.zeros(n, np.int64)
        self.client_s, self.server_s = np.zeros(n), 0.0

    def client(self, u: int, fn, *args):
        start = self.clock() if self.clock else 0.0
        out = fn(*args)
        if self.clock:
            self.client_s[u] += self.clock() - start
        return out

    def server(self, fn, *args):
        start = self.clock() if self.clock else 0.0
        out = fn(*args)
        if self.clock:
            self.server_s += self.clock() - start
        return out


def run_secure_aggregation(
    inputs: Sequence[np.ndarray],
    config: SecAggConfig,
    dropouts: Mapping[str, Iterable[int]] | None = None,
    seed: int = 0,
    *,
    round_id: int = 0,
    clock: Callable[[], float] | None = None,
    identities: Mapping[int, bytes] | None = None,
) -> SecAggRun:
    """Run one round of SecAgg (or SecAgg+) over ``inputs`` in memory.

    Args:
        inputs: one float vector of length ``config.vector_length`` per client (client u is ``inputs[u]``).
        config: the round's settings; ``config.num_clients`` must equal ``len(inputs)``.
        dropouts: ``{stage: clients}``: a client listed under a stage sends nothing from that stage on.
            Stages: ``advertise_keys``, ``share_keys`` (dropped after advertising), ``masked_input``
            (after sharing keys), ``consistency_check`` (actively secure variant only: after its masked
            input), ``unmasking`` (after sending its masked input, or its consistency signature).
        seed: seeds the clients' key material (``DeterministicRandom``: simulation only) and the graph.
        round_id: the round id carried by every message.
        clock: e.g. ``time.perf_counter`` to time each party; None to skip timing.
        identities: ``client id -> 32-byte Ed25519 identity key`` of every client: runs the actively
            secure variant (signed keys and the ConsistencyCheck round, :mod:`hamrah.secagg.active`);
            None runs the semi-honest one.

    Returns:
        A :class:`SecAggRun` with the sum and the per-party bytes (and seconds).

    Raises:
        ConfigError: ``inputs``, ``dropouts`` or ``identities`` do not fit the config.
        DropoutThresholdExceeded: too few clients survived a stage (the message names it).
    """
    n = config.num_clients
    if len(inputs) != n:
        raise ConfigError(f"got {len(inputs)} inputs for a config of num_clients={n}")
    streams = np.random.SeedSequence(seed).generate_state(n + 1, dtype=np.uint64)
    if identities is None:
        clients = [
            SecAggClient(u, config, round_id=round_id, randbytes=DeterministicRandom(int(streams[u]))) for u in range(n)
        ]
        server = SecAggServer(config, round_id=round_id, graph_seed=int(streams[n]))
    else:
        if set(identities) != set(range(n)):
            raise ConfigError(f"identities must hold one signing key for each client 0..{n - 1}")
        public = {u: identity_public_key(key) for u, key in identities.items()}
        clients = [
            ActiveSecAggClient(
                u,
                config,
                signing_key=identities[u],
                verify_keys=public,
                round_id=round_id,
                randbytes=DeterministicRandom(int(streams[u])),
            )
            for u in range(n)
        ]
        server = ActiveSecAggServer(config, verify_keys=public, round_id=round_id, graph_seed=int(streams[n]))
    dropped = _check_dropouts(dropouts or {}, n, server.stages)
    return _drive(clients, server, inputs, dropped, _Meter(n, clock))


_STEPS = {
    "advertise_keys": lambda c, m, x: c.advertise_keys(),
    "share_keys": lambda c, m, x: c.share_keys(m),
    "masked_input": lambda c, m, x: c.masked_input(m, np.asarray(x)),
    "consistency_check": lambda c, m, x: c.consistency_check(m),
    "unmasking": lambda c, m, x: c.unmask(m),
}


def _drive(clients, server, inputs, dropped: dict[str, set[int]], meter: _Meter) -> SecAggRun:
    """Carry every stage's messages (as bytes) between the clients and the server; drop clients as told."""
    gone: set[int] = set()
    pending = {u: None for u in range(len(clients))}
    server_sent = server_recv = 0
    for stage in server.stages:
        gone |= dropped.get(stage, set())
        for u, wire in pending.items():
            if u in gone:
                continue
            message = None if wire is None else meter.client(u, decode, wire)
            reply = meter.client(u, _STEPS[stage], clients[u], message, inputs[u]).to_bytes()
            meter.sent[u] += len(reply)
            server_recv += len(reply)
            meter.server(server.receive, reply)
        out = meter.server(getattr(server, "close_" + stage))
        if stage == server.stages[-1]:
            result = out
            break
        pending = {u: meter.server(lambda m: m.to_bytes(), m) for u, m in out.items()}
        for u, wire in pending.items():
            server_sent += len(wire)
            if u not in gone:
                meter.recv[u] += len(wire)
    timed = meter.clock is not None
    return SecAggRun(
        result,
        meter.sent,
        meter.recv,
        server_sent,
        server_recv,
        meter.client_s if timed else None,
        meter.server_s if timed else None,
    )


def _check_dropouts(
    dropouts: Mapping[str, Iterable[int]], n: int, stages: Sequence[str] = STAGES
) -> dict[str, set[int]]:
    out = {}
    for stage, ids in dropouts.items():
        if stage not in stages:
            raise ConfigError(f"unknown drop-out stage {stage!r}, expected one of {list(stages)}")
        ids = {int(u) for u in ids}
        if not all(0 <= u < n for u in ids):
            raise ConfigError(f"drop-outs at {stage!r} name clients outside [0, {n})")
        out[stage] = ids
    return out


def random_dropouts(num_clients: int, fractions: Mapping[str, float], rng: np.random.Generator) -> dict[str, set[int]]:
    """Drop ``round(fraction * alive)`` of the clients still alive at each stage, drawn with ``rng``.

    Args:
        num_clients: n.
        fractions: ``{stage: fraction in [0, 1]}``, stages as in :func:`run_secure_aggregation`.
        rng: the generator to draw with.

    Returns:
        ``{stage: clients dropped there}``.
    """
    alive, out = list(range(num_clients)), {}
    for stage in STAGES:
        f = float(fractions.get(stage, 0.0))
        if not 0.0 <= f <= 1.0:
            raise ConfigError(f"drop-out fraction for {stage!r} must lie in [0, 1], got {f}")
        drop = set(rng.choice(alive, size=int(round(f * len(alive))), replace=False).tolist()) if alive else set()
        out[stage] = drop
        alive = [u for u in alive if u not in drop]
    unknown = set(fractions) - set(STAGES)
    if unknown:
        raise ConfigError(f"unknown drop-out stage(s) {sorted(unknown)}, expected {list(STAGES)}")
    return out
