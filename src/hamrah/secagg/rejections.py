"""Which clients a round leaves out when clients reject each other's share ciphertexts.

A client that cannot open the ciphertext a sender v sealed for it (garbage: it fails authentication, or
holds no field elements) leaves v out of its pairwise masks and lists v as *rejected* in its masked input
(:meth:`hamrah.secagg.client.SecAggClient.masked_input`). Each rejection is an *accusation* edge
u -> v. The sum is correct over any contributor set C in which no member accuses another: for u, v both
in C, u added the pair's mask iff v did, so it cancels; the masks members of C added for anyone outside
C are stripped with that client's rebuilt s^SK (never its b, see docs/secagg.md). :func:`left_out`
picks which clients of the round's masked inputs leave the sum so that no accusation stays inside.

Leaving out every accused client would let one hostile client, by accusing all the others, stop every
round; leaving out every accuser would let a sender of garbage take its honest receivers out with it.
Instead the server leaves out, one by one, the client with the most accusations still standing against
it or by it (ties: the more accused, then the larger id), until none stands: a sender of garbage to two
or more clients, or an accuser of two or more clients, goes alone; with one accusation the accused goes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping


def accusations(rejections: Mapping[int, Iterable[int]], among: set[int]) -> set[tuple[int, int]]:
    """Return the edges ``(accuser, accused)`` whose both ends are in ``among``."""
    return {(u, v) for u, vs in rejections.items() if u in among for v in vs if v in among}


def left_out(rejections: Mapping[int, Iterable[int]], arrived: set[int]) -> set[int]:
    """Return the clients of ``arrived`` to leave out so that no remaining one accuses another.

    Args:
        rejections: ``accuser -> the senders it rejected``.
        arrived: the clients whose masked input arrived (U3).
    """
    edges = accusations(rejections, arrived)
    out: set[int] = set()
    while edges:
        degree: Counter[int] = Counter()
        accused: Counter[int] = Counter()
        for u, v in edges:
            degree[u] += 1
            degree[v] += 1
            accused[v] += 1
        worst = max(degree, key=lambda c: (degree[c], accused[c], c))
        out.add(worst)
        edges = {(u, v) for u, v in edges if worst not in (u, v)}
    return out


def rejecters(rejections: Mapping[int, Iterable[int]]) -> dict[int, set[int]]:
    """Return ``sender -> the clients that rejected it`` (the inverse of ``rejections``)."""
    out: dict[int, set[int]] = {}
    for u, vs in rejections.items():
        for v in vs:
            out.setdefault(v, set()).add(u)
    return out
