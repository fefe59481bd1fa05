"""Retrying an unreachable peer: the longest pause between tries and the jitter that spreads a fleet out."""

from __future__ import annotations

import random

RETRY_MAX_S = 5.0  # a device that cannot reach the server tries again at least this often (the server lingers as long)


def jittered(delay: float, rng: random.Random) -> float:
    """Return a backoff sleep: uniformly in [delay / 2, delay] ("equal jitter"), so devices spread out."""
    return delay / 2 + rng.random() * delay / 2
