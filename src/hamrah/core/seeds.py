"""One seed at the root, split per round and per client with numpy's SeedSequence."""

from __future__ import annotations

import numpy as np

# Spawn-key tags keep the streams of different purposes apart.
_INIT, _SAMPLE, _CLIENT, _PARTITION, _CHURN = 0, 1, 2, 3, 4


def _seq(seed: int, *key: int) -> np.random.SeedSequence:
    return np.random.SeedSequence(seed, spawn_key=tuple(int(k) for k in key))


def init_seed(seed: int) -> int:
    """Return the torch seed used to initialise the global model."""
    return int(_seq(seed, _INIT).generate_state(1)[0])


def sampling_rng(seed: int, round_idx: int) -> np.random.Generator:
    """Return the generator that picks the cohort of ``round_idx``."""
    return np.random.default_rng(_seq(seed, _SAMPLE, round_idx))


def client_rng(seed: int, round_idx: int, client_id: int) -> np.random.Generator:
    """Return the generator for client ``client_id``'s local work in ``round_idx``."""
    return np.random.default_rng(_seq(seed, _CLIENT, round_idx, client_id))


def partition_rng(seed: int) -> np.random.Generator:
    """Return the generator used to partition a data set across clients."""
    return np.random.default_rng(_seq(seed, _PARTITION))


def churn_rng(seed: int, device: int) -> np.random.Generator:
    """Return the generator of simulated faults (churn) for fleet member ``device``: independent per device."""
    return np.random.default_rng(_seq(seed, _CHURN, device))
