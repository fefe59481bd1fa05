"""The Ray actor backend of the server (``[server] backend = "ray"``; Bonawitz et al. 2019, section 4.2).

The round's Aggregators run as Ray actors, so aggregation spreads over a Ray cluster's machines;
the Coordinator, the Selectors and the gRPC service stay in the server process, which holds the
device connections. Each actor hosts the same ``AggregatorShare`` class as the asyncio backend.

A report is sent with ``actor.add.remote(result)`` and not waited for; the reports routed to each
actor are counted here, so ``MasterAggregator.reports()`` never blocks. Ray runs one caller's tasks
on an actor in submission order, so the ``partial`` call at the end of the round sees every ``add``
before it. The Coordinator calls ``MasterAggregator.finalize`` (the blocking ``ray.get``) in a
worker thread, off the event loop. A failed actor (``crash``: ``ray.kill``, or one found dead when
the round closes) loses only its share. Actors are kept from round to round, and a dead one is
replaced in the next round.

Ray is joined or started through :class:`hamrah.transport.ray_cluster.RaySession`: the running instance,
``RAY_ADDRESS``'s cluster, or a local instance (shut down by ``close``, and killed by a watchdog if
the server is SIGKILLed).

An actor that dies on its own mid-round is noticed when a call sent to it fails (``RayShare.failed``,
polled without waiting whenever the Master Aggregator counts reports or routes one): it is then lost like
a crashed one, so its reports stop counting towards the goal and the round goes on with the live ones.
"""

from __future__ import annotations

import logging

from hamrah.core.aggregate import Contribution
from hamrah.core.errors import ConfigError
from hamrah.server.aggregators import AggregatorShare, Partial
from hamrah.transport.ray_cluster import RaySession

try:
    import ray
    from ray.exceptions import GetTimeoutError, RayActorError
except ImportError as e:  # the optional extra is missing
    raise ConfigError("server.backend = 'ray' needs the ray extra: pip install 'hamrah[ray]'") from e

log = logging.getLogger("hamrah.server")
GATHER_TIMEOUT_S = 120.0  # an actor that does not answer within this is counted as failed


class AggregatorActor:
    """Host one round's ``AggregatorShare`` at a time, so one actor process serves many rounds."""

    def __init__(self) -> None:
        self.aggregator: AggregatorShare | None = None

    def start(self, index: int, buffered: bool) -> None:
        self.aggregator = AggregatorShare(index, buffered)

    def add(self, contribution: Contribution) -> None:
        self.aggregator.add(contribution)

    def partial(self) -> Partial:
        return self.aggregator.partial()


RemoteAggregator = ray.remote(AggregatorActor).options(scheduling_strategy="SPREAD")


class RayShare:
    """The Master Aggregator's handle on one Aggregator actor; counts what it routed there."""

    def __init__(self, index: int, actor, started=None) -> None:
        self.index, self.actor = index, actor
        self.alive, self.count = True, 0
        self._pending = [] if started is None else [started]  # calls not yet seen to succeed

    def add(self, contribution: Contribution) -> None:
        """Send one client's packed statistics to the actor without waiting for it."""
        self._pending.append(self.actor.add.remote(contribution))
        self.count += 1

    def failed(self) -> bool:
        """Return whether the actor died under a call sent to it (checked without waiting)."""
        if not self.alive or not self._pending:
            return False
        done, self._pending = ray.wait(self._pending, num_returns=len(self._pending), timeout=0)
        try:
            ray.get(done)
        except RayActorError:
            return True
        return False

    def crash(self) -> None:
        """Fail: kill the actor; its share is lost."""
        if self.alive:
            ray.kill(self.actor, no_restart=True)
        self.alive = False


class RayBackend:
    """Spawn Aggregators as Ray actors (one per index, reused across rounds) and gather their sums."""

    def __init__(self) -> None:
        self._ray = RaySession("server.backend")
        self._pool: dict[int, RayShare] = {}

    def spawn(self, index: int, buffered: bool) -> RayShare:
        """Return a live actor for ``index`` (a new one if there is none or it failed), reset for a round."""
        old = self._pool.get(index)
        actor = old.actor if old is not None and old.alive else RemoteAggregator.remote()
        self._pool[index] = RayShare(index, actor, actor.start.remote(index, buffered))
        return self._pool[index]

    def gather(self, shares: list[RayShare]) -> list[Partial | None]:
        """Return each share's partial sums (blocking); None for an actor that died or did not answer."""
        refs = [s.actor.partial.remote() for s in shares]
        if refs:  # one deadline for all: k silent actors cost GATHER_TIMEOUT_S, not k times it
            ray.wait(refs, num_returns=len(refs), timeout=GATHER_TIMEOUT_S)
        out: list[Partial | None] = []
        for share, ref in zip(shares, refs):
            try:
                out.append(ray.get(ref, timeout=0))
            except (RayActorError, GetTimeoutError) as e:
                log.warning(
                    "aggregator %d failed (%s): its %d reports are lost", share.index, type(e).__name__, share.count
                )
                share.crash()
                out.append(None)
        return out

    def close(self) -> None:
        """Kill the actors; shut Ray down if this backend started it."""
        for share in self._pool.values():
            share.crash()
        self._pool.clear()
        self._ray.close()
