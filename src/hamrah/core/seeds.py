"""One seed at the root, split per round and per client with numpy's SeedSequence.

Every stream of the code base is ``SeedSequence(seed, spawn_key=(tag, ...))`` with its tag from ONE
enum, :class:`Stream`, so two purposes can never share a tag (the malicious-client draw and the
simulator's pipeline stream both used 103 before: a stream with key ``(103,)`` is the parent of the
keys ``(103, r, k)``, so its children would have been the pipeline's streams).

What is not a root stream: generators seeded from another stream's draw are that stream's children
(DP-FTRL's secret tree seed, drawn from the server's pipeline stream; SecAgg's per-client randomness
under a round seed; the rotation signs of distributed DP under the round's public rotation seed).
Outside this enum, by design: the server's cohort draw and pace steering use Python's
``random.Random(seed)`` (``hamrah.server.machine``: devices arrive in real time, so a server run is not
replayed from the seed but from its journal), and the vertical-FL protocols seed from their own
config's seed (``hamrah.vertical``: batches, networks, PSI shuffles).
"""

from __future__ import annotations

import enum

import numpy as np


class Stream(enum.IntEnum):
    """Spawn-key tags: the first entry of every stream's spawn key (all distinct, checked by a test)."""

    INIT = 0  # the global model's initialisation
    SAMPLE = 1  # the cohort of round r
    CLIENT = 2  # client k's shuffles in round r
    PARTITION = 3  # the partition of a data set
    CHURN = 4  # simulated faults of fleet member d
    SYNTHETIC = 7  # the synthetic data sets
    WORK = 101  # the simulator's per-client local work (heterogeneity)
    ATTACK = 102  # the simulator's attack hook (poisoned data and updates)
    PIPELINE = 103  # the simulator's update pipeline (stochastic rounding, noise), per round and client
    ROOT = 104  # FLTrust's root set and its reference update
    MALICIOUS = 105  # which clients an attack controls (was 103: see the module docstring)
    HOLDOUT = 106  # a client's or site's held-out examples (fixed for the run: no round in the key)
    TREE = 107  # DP-FTRL's permutation of the population for tree t (the simulator's cohorts of that tree)
    FINETUNE = 108  # a client's local training of the global model before it is scored (personalization)
    BOOST_DRAW = 109  # SecureBoost's rows and columns of tree t (subsample, colsample_bytree)


_INIT, _SAMPLE, _CLIENT, _PARTITION, _CHURN = Stream.INIT, Stream.SAMPLE, Stream.CLIENT, Stream.PARTITION, Stream.CHURN


def stream_rng(seed: int, tag: Stream, *key: int) -> np.random.Generator:
    """Return the generator of stream ``tag`` (and the further spawn-key entries ``key``) under ``seed``."""
    return np.random.default_rng(_seq(seed, int(tag), *key))


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
