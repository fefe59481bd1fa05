"""The masking graph: complete for SecAgg, a k-regular graph over a seeded random labelling for SecAgg+.

Bell et al. 2020 (CCS), Section 3, replace SecAgg's complete graph with a sparse random graph of
degree k = O(log n): a client masks with, and shares its secrets among, its neighbours only. They
analyse an Erdős-Rényi graph; we use the Harary graph H(k, n) (client at position i joined to the
positions i +- 1 .. i +- k/2 of a ring) over a uniformly random permutation of the clients, drawn
from a seed the server picks. Every client then has exactly k neighbours (no client is left with a
thin neighbourhood by chance), while which clients are adjacent is still random and unknown to the
clients before the server fixes the seed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def masking_graph(ids: Sequence[int], degree: int | None, seed: int) -> dict[int, frozenset[int]]:
    """Return each client's neighbours.

    Args:
        ids: the clients of the round.
        degree: None for the complete graph (SecAgg); an even k < len(ids) - 1 for SecAgg+.
        seed: the seed of the random labelling (ignored for the complete graph).

    Returns:
        ``{u: N(u)}``, symmetric, with u not in N(u).
    """
    ids = list(ids)
    if degree is None:
        everyone = frozenset(ids)
        return {u: everyone - {u} for u in ids}
    order = [ids[i] for i in np.random.default_rng(seed).permutation(len(ids))]
    n, half = len(order), degree // 2
    return {u: frozenset(order[(pos + d) % n] for d in range(-half, half + 1) if d) for pos, u in enumerate(order)}
