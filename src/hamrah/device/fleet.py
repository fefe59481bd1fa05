"""A fleet of real device runtimes in one process: each with its own Example Store, gRPC channel and
state source, with optional scripted churn (devices going offline, unplugging, failing or dying
mid-task)."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from hamrah.core.errors import AuthError, ConfigError, TransportError
from hamrah.core.files import check_writable_file
from hamrah.core.seeds import churn_rng
from hamrah.device.config import DeviceConfig, DeviceStats
from hamrah.device.eligibility import DeviceState, FunctionState
from hamrah.device.runtime import DeviceRuntime
from hamrah.device.secure import SECAGG_STAGES
from hamrah.device.store import ExampleStore
from hamrah.transport.identity import token_digest, write_private
from hamrah.transport.provision import DeviceCredentials

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
        # One independent stream per device (SeedSequence spawn keys): the first draws of devices
        # 0, 1, 2... are uniform and independent, so a 10% fault strikes about 10% of them.
        self.churn, self.rng = churn, churn_rng(churn.seed, index)
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


async def run_fleet(
    base: DeviceConfig,
    stores: list[Path],
    tokens: list[str | DeviceCredentials | None],
    churn: Churn = Churn(),
    client_keys: list[int] | None = None,
    task=None,
    on_round: Callable[[int, int | None], None] | None = None,
) -> list[DeviceStats | None]:
    """Run one device runtime per store until the server ends training.

    Args:
        base: the settings every device shares.
        stores: one Example Store per device.
        tokens: per device a token, None (no authentication) or a provisioned kit (token, signing key,
            TLS files).
        churn: simulated faults.
        client_keys: per device the partition client it holds (seeds its shuffles).
        task: the user task installed on every device (``hamrah.Task``), a list of one per device, or None
            (built-in models only).
        on_round: called with (the latest round any device got a task of, the run's rounds as the plan
            says or None) each time that round grows: a progress display's feed.

    Returns:
        Per device its stats; None for a device that died (simulated). A device the server refuses
        (revoked token, bad signature) or that cannot reach it stops alone, with a log line; the
        others go on.

    Raises:
        ConfigError: not one token per store.
    """
    if len(tokens) != len(stores):
        raise ConfigError(f"{len(stores)} stores but {len(tokens)} tokens: expected one token per device")
    keys = client_keys if client_keys is not None else list(range(len(stores)))
    tasks = task if isinstance(task, list) else [task] * len(stores)

    over = asyncio.Event()  # a device heard that training is over: so it is for every device of the fleet
    stats: list[DeviceStats | None] = [DeviceStats() for _ in stores]

    async def one(i: int) -> None:
        member = _Device(i, churn)
        cfg = replace(base, device_id=f"{base.device_id}-{i}", client_key=keys[i])
        kit = tokens[i]
        cfg = kit.apply(cfg) if isinstance(kit, DeviceCredentials) else replace(cfg, token=kit)
        with ExampleStore(stores[i]) as store:
            runtime = DeviceRuntime(cfg, store, FunctionState(member.read), member.fault, tasks[i])
            stats[i] = runtime.stats
            try:
                if (await runtime.run()).finished:
                    over.set()
            except DeviceKilled as e:
                log.info("device %d killed mid-task (%s)", i, e)
                stats[i] = None
            except TransportError as e:  # the server went away for good: training is over for us
                log.info("device %d stops: %s", i, e)
            except AuthError as e:  # this device only: revoked, or its credentials are refused
                log.warning("device %d stops: %s", i, e)
                runtime.stats.messages.append(f"stopped: {e}")

    async def until_over(i: int) -> None:
        """Run device i until it stops, or until another device hears that training is over (this one
        may be sleeping or retrying a server that has ended: it would otherwise wait out its retry time)."""
        task, done = asyncio.ensure_future(one(i)), asyncio.ensure_future(over.wait())
        try:
            await asyncio.wait({task, done}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            done.cancel()
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if not task.cancelled():
            task.result()  # an unexpected error (a bad credentials file) is the user's to see

    async def watch_rounds() -> None:
        seen = 0
        while True:
            live = [s for s in stats if s is not None]
            latest = max((s.last_round for s in live), default=0)
            if latest > seen and on_round is not None:
                seen = latest
                on_round(latest, next((s.total_rounds for s in live if s.total_rounds), None))
            await asyncio.sleep(0.5)

    watcher = asyncio.ensure_future(watch_rounds())
    try:
        await asyncio.gather(*(until_over(i) for i in range(len(stores))))
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
    return stats


MAX_TOKENS = 10**6


def make_tokens(path: Path, count: int, server_file: Path | None = None) -> list[str]:
    """Return ``count`` device tokens from ``path`` (one per line), creating the file (mode 0600) if it
    does not exist.

    Everything is checked before anything is written or its mode changed: a failed call leaves both
    files as they were.

    Args:
        path: the devices' tokens (secret: readable by the owner only).
        count: how many tokens are needed (1 to :data:`MAX_TOKENS`).
        server_file: if given, also write there what the server needs: one ``sha256:<hex>`` digest per
            token (mode 0600), never the tokens themselves.

    Raises:
        ConfigError: a bad count; a path that is a folder or lies under a file; a file that is not text,
            holds a line that is not one token, holds fewer than ``count`` tokens, or holds digests
            instead of tokens.
    """
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_TOKENS:
        raise ConfigError(f"token count {count!r}: expected an integer from 1 to {MAX_TOKENS:,}")
    path = Path(path)
    if not path.exists():
        check_writable_file(path, "tokens file")
    elif not path.is_file():
        kind = "is a folder" if path.is_dir() else "is not a regular file"
        raise ConfigError(f"tokens file {path}: {kind}; expected a file of device tokens, one per line")
    if server_file is not None:
        check_writable_file(server_file, "server file")
        if Path(server_file).resolve() == path.resolve():
            raise ConfigError(
                f"{server_file}: the server's file would overwrite the devices' tokens; expected another path"
            )
    tokens = _read_tokens(path) if path.exists() else [secrets.token_urlsafe(24) for _ in range(count)]
    if len(tokens) < count:
        raise ConfigError(f"{path}: holds {len(tokens)} tokens, the fleet needs {count}")
    if not path.exists():
        write_private(path, "".join(t + "\n" for t in tokens).encode())
    elif path.stat().st_mode & 0o077:  # an older, world-readable tokens file: make it private
        log.warning("%s was readable by others: made it readable by its owner only (0600)", path)
        path.chmod(0o600)
    if server_file is not None:
        write_private(server_file, "".join(f"sha256:{token_digest(t)}\n" for t in tokens).encode())
    return tokens[:count]


def _read_tokens(path: Path) -> list[str]:
    """Return the tokens of an existing tokens file (one per line; blank lines and ``#`` comments skipped).

    Raises:
        ConfigError: not UTF-8 text, a line that is not one printable token, or token digests.
    """
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the tokens file ({e.strerror})") from None
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"{path}: not a text file (byte {e.start} is not UTF-8); expected one token per line"
        ) from None
    tokens = []
    for i, line in enumerate(text.splitlines(), 1):
        token = line.strip()
        if not token or token.startswith("#"):  # blank lines and comments, as the server reads them
            continue
        if not token.isascii() or not token.isprintable() or any(c.isspace() for c in token):
            raise ConfigError(
                f"{path}: line {i} is not one token (it holds a space or a character that is not printable "
                "ASCII); expected one token per line"
            )
        if token.startswith("sha256:"):
            raise ConfigError(
                f"{path}: holds token digests (the server's file), not tokens: give the devices' tokens file"
            )
        tokens.append(token)
    return tokens
