"""Which clients train in a round: the cohort the privacy accounting assumes."""

from __future__ import annotations

import numpy as np

from hamrah.core.seeds import Stream, sampling_rng, stream_rng
from hamrah.pipeline import PipelineSpec


def sample_cohort(seed: int, round_idx: int, num_clients: int, cohort: int, spec: PipelineSpec | None) -> np.ndarray:
    """Return the sorted client ids of round ``round_idx``: DP-FTRL's cohort of the round's tree, each
    client with probability q where the DP accounting assumes Poisson sampling, else ``cohort`` clients
    drawn without replacement."""
    tree = (
        None
        if spec is None
        else spec.cohort_of(round_idx, num_clients, lambda t: stream_rng(seed, Stream.TREE, t))  # once per tree
    )
    if tree is not None:
        return tree
    rng = sampling_rng(seed, round_idx)
    if spec is not None and spec.poisson_q is not None:
        return np.flatnonzero(rng.random(num_clients) < spec.poisson_q)
    return np.sort(rng.choice(num_clients, size=cohort, replace=False))
