"""A fleet of real device runtimes in one process: each with its own Example Store, gRPC channel and
state source, with optional scripted churn (devices going offline, unplugging, failing or dying
mid-task)."""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
import time
from dataclasses import dataclass, replace
from pathlib import Path

from hamrah.core.errors import ConfigError, TransportError
from hamrah.device.eligibility import DeviceState, FunctionState
from hamrah.device.runtime import DeviceConfig, DeviceRuntime, DeviceStats
from hamrah.device.secure import SECAGG_STAGES
from hamrah.device.store import ExampleStore

log = logging.getLogger("hamrah.fleet")
FAULTS = ("offline", "unplug", "fail", "kill", "drop")


@dataclass(frozen=True)
class Churn:
    """Per-task probabilities of what goes wrong on a device, drawn from ``seed``.

    offline: vanishes mid-task without a word, back after ``away_s``; unplug: stops charging mid-task
    (the runtime aborts and tells the server), charging again after ``away_s``; fail: an error
    mid-task, reported; kill: the device dies mid-task and never returns; drop: under secure
    aggregation, vanishes before sending its message of protocol stage ``drop_stage``.
    """

    offline: float = 0.0
    unplug: float = 0.0
    fail: float = 0.0
    kill: float = 0.0
    drop: float = 0.0
    drop_stage: str = "masked_input"
    away_s: float = 1.0
    seed: int = 0
    only_round: int | None = None  # faults strike only tasks of this round (None: every round)

    def __post_init__(self) -> None:
        probs = {k: getattr(self, k) for k in FAULTS}
        if self.drop_stage not in SECAGG_STAGES:
            raise ConfigError(f"churn drop_stage = {self.drop_stage!r}: expected one of {', '.join(SECAGG_STAGES)}")
        for k, v in probs.items():
            if not 0.0 <= v <= 1.0:
                raise ConfigError(f"churn {k} = {v!r}: expected a probability in [0, 1]")
        if sum(probs.values()) > 1.0:
            raise ConfigError(f"churn probabilities sum to {sum(probs.values()):.2f}: expected at most 1")


class DeviceKilled(Exception):
    """A simulated device died mid-task."""


class _Device:
    """One fleet member's state source and fault script."""

    def __init__(self, index: int, churn: Churn):
        self.churn, self.rng = churn, random.Random(churn.seed * 1_000_003 + index)
        self.unplugged_until = 0.0

    def read(self) -> DeviceState:
        return DeviceState(charging=time.monotonic() >= self.unplugged_until)

    def fault(self, round_idx: int) -> str | None:
        u, c = self.rng.random(), self.churn
        if c.only_round is not None and round_idx != c.only_round:
            return None
        for name in FAULTS:
            p = getattr(c, name)
            if u < p:
                if name == "unplug":
                    self.unplugged_until = time.monotonic() + c.away_s
                if name == "kill":
                    raise DeviceKilled(f"round {round_idx}")
                return f"drop:{c.drop_stage}" if name == "drop" else name
            u -= p
        return None


async def run_fleet(base: DeviceConfig, stores: list[Path], tokens: list[str | None], churn: Churn = Churn(),
                    client_keys: list[int] | None = None) -> list[DeviceStats | None]:
    """Run one device runtime per store until the server ends training; None for devices that died."""
    if len(tokens) != len(stores):
        raise ConfigError(f"{len(stores)} stores but {len(tokens)} tokens: expected one token per device")
    keys = client_keys if client_keys is not None else list(range(len(stores)))

    async def one(i: int) -> DeviceStats | None:
        member = _Device(i, churn)
        cfg = replace(base, token=tokens[i], device_id=f"{base.device_id}-{i}", client_key=keys[i])
        with ExampleStore(stores[i]) as store:
            runtime = DeviceRuntime(cfg, store, FunctionState(member.read), member.fault)
            try:
                return await runtime.run()
            except DeviceKilled as e:
                log.info("device %d killed mid-task (%s)", i, e)
                return None
            except TransportError as e:  # the server went away for good: training is over for us
                log.info("device %d stops: %s", i, e)
                return runtime.stats

    return list(await asyncio.gather(*(one(i) for i in range(len(stores)))))


def make_tokens(path: Path, count: int) -> list[str]:
    """Return ``count`` device tokens from ``path`` (one per line), creating the file if it does not exist."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(secrets.token_urlsafe(24) + "\n" for _ in range(count)), encoding="utf-8")
    tokens = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    if len(tokens) < count:
        raise ConfigError(f"{path}: holds {len(tokens)} tokens, the fleet needs {count}")
    return tokens[:count]
