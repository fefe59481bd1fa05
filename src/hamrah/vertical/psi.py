"""ECDH private set intersection for two or more parties, on X25519.

Meadows 1986 / Huberman, Franklin and Hogg 1999: each party ``i`` draws a secret scalar ``k_i``; an
id ``x`` becomes the point ``H(x)``, and ``H(x)^(k_1 ... k_m)`` (every party's key applied, in any
order, since scalar multiplication commutes) is equal for two parties exactly when their ids are.

Hash to group: ``H(x) = SHA-256("hamrah-psi|" || x)`` with the top bit cleared, read as an X25519
u-coordinate; ``cryptography``'s X25519 (RFC 7748) multiplies it by a clamped scalar (a multiple of
the cofactor 8). A hash that lands on the quadratic twist is multiplied on the twist, which is also
a large prime-order group for Curve25519 (twist security), so every id maps to a point of one of two
groups where DDH is believed hard. A uniform map into one prime-order group (ristretto255's
``from_hash``) would be the textbook choice; neither ``cryptography`` nor PyNaCl 1.6 exposes it.

Rounds, with the parties in a ring (the leader first, then the others by name): each party hashes
and blinds its own ids in a secret random order and passes the list along the ring; each party
applies its key to the list it receives and passes it on, so after ``m`` hops every list carries
all keys and is back with its owner, who knows which id sits at each position. The others send
their fully blinded values, sorted, to the leader; the leader keeps its own ids whose value is in
every set and sends back the fully blinded values of the intersection, sorted; each party maps them
to its ids.

What each party learns: the intersection (its ids), and the sizes of the other parties' sets (the
lengths of the lists it relays). With three or more parties the leader also sees every other
party's fully blinded set, so it can count how many values two of them share outside its own set
(e.g. ``|H1 ∩ H2|``), never which ids. Blinded values carry no id without every key.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from hamrah.core.errors import ConfigError, DataError, ProtocolError
from hamrah.data.vertical import PartyTable

POINT = 32


@dataclass(frozen=True)
class PSIConfig:
    """Settings of PSI.

    Attributes:
        leader: the party that computes the intersection and tells the others (the guest).
    """

    leader: str = "guest"

    def __post_init__(self) -> None:
        if not isinstance(self.leader, str) or not self.leader:
            raise ConfigError(f"psi.leader: expected a party name, got {self.leader!r}")


def hash_ids(ids: np.ndarray) -> list[bytes]:
    """Return each int64 id hashed to an X25519 u-coordinate (32 bytes)."""
    out = []
    for v in np.asarray(ids, dtype=np.int64).tolist():
        d = bytearray(hashlib.sha256(b"hamrah-psi|" + int(v).to_bytes(8, "little", signed=True)).digest())
        d[31] &= 0x7F
        out.append(bytes(d))
    return out


def blind(key: X25519PrivateKey, points: list[bytes]) -> list[bytes]:
    """Return ``points`` multiplied by ``key``'s scalar.

    Raises:
        ProtocolError: a point of small order (only a hostile party sends one).
    """
    try:
        return [key.exchange(X25519PublicKey.from_public_bytes(p)) for p in points]
    except ValueError:
        raise ProtocolError("psi: a received value is a point of small order (not a blinded id)") from None


def _to_array(points: list[bytes]) -> np.ndarray:
    return np.frombuffer(b"".join(points), dtype=np.uint8).reshape(len(points), POINT)


def _from_array(fields: dict, frm: str) -> list[bytes]:
    arr = fields.get("points")
    if not isinstance(arr, np.ndarray) or arr.dtype != np.uint8 or arr.ndim != 2 or arr.shape[1] != POINT:
        raise ProtocolError(f"psi: from {frm!r}, expected 'points' as a uint8 array of shape (k, {POINT})")
    data = arr.tobytes()
    return [data[i : i + POINT] for i in range(0, len(data), POINT)]


def _ring(channel, leader: str, parties: tuple[str, ...] | None) -> tuple[str, ...]:
    names = set(parties or channel.peers) | {channel.name}
    if leader not in names:
        raise ConfigError(f"psi.leader = {leader!r}: not one of the parties {sorted(names)}")
    return (leader,) + tuple(sorted(names - {leader}))


def _check_ids(ids: np.ndarray) -> np.ndarray:
    ids = np.asarray(ids, dtype=np.int64)
    if len(np.unique(ids)) != len(ids):
        raise DataError(f"psi: the id column holds {len(ids) - len(np.unique(ids))} duplicate ids; expected unique ids")
    return ids


def intersect(
    channel,
    ids: np.ndarray,
    config: PSIConfig = PSIConfig(),
    rng: np.random.Generator | None = None,
    parties: tuple[str, ...] | None = None,
) -> np.ndarray:
    """Run PSI as the party behind ``channel`` and return the shared ids, sorted.

    Args:
        channel: this party's channel; its peers are the other PSI parties.
        ids: this party's int64 ids, unique.
        config: which party leads.
        rng: shuffles the party's list (``None``: the OS CSPRNG). The X25519 key always comes from the OS.
        parties: the PSI parties (default: this party and all its peers; an arbiter stays out).

    Returns:
        The ids every party holds, sorted.

    Raises:
        DataError: duplicate ids. ConfigError: the leader is not a party.
        ProtocolError: a malformed list, or a result that is not a subset of this party's set.
    """
    ids = _check_ids(ids)
    ring = _ring(channel, config.leader, parties)
    me = ring.index(channel.name)
    nxt, prv = ring[(me + 1) % len(ring)], ring[me - 1]
    order = (rng or np.random.default_rng(np.random.SeedSequence())).permutation(len(ids))
    key = X25519PrivateKey.generate()
    current = blind(key, hash_ids(ids[order]))
    for step in range(1, len(ring)):
        channel.send(nxt, f"psi/ring{step}", {"points": _to_array(current)})
        current = blind(key, _from_array(channel.recv(prv, f"psi/ring{step}"), prv))
    channel.send(nxt, "psi/full", {"points": _to_array(current)})
    mine = _from_array(channel.recv(prv, "psi/full"), prv)
    if len(mine) != len(ids):
        raise ProtocolError(f"psi: {prv!r} returned {len(mine)} blinded ids, expected this party's {len(ids)}")
    position = {p: int(i) for p, i in zip(mine, order)}
    if channel.name == config.leader:
        common = set(mine)
        for peer in ring[1:]:
            common &= set(_from_array(channel.recv(peer, "psi/set"), peer))
        shared = sorted(common)
        for peer in ring[1:]:
            channel.send(
                peer, "psi/result", {"points": _to_array(shared) if shared else np.zeros((0, POINT), np.uint8)}
            )
    else:
        channel.send(config.leader, "psi/set", {"points": _to_array(sorted(mine))})
        shared = _from_array(channel.recv(config.leader, "psi/result"), config.leader)
        if any(p not in position for p in shared):
            raise ProtocolError(f"psi: {config.leader!r} returned values that are not in this party's set")
    return np.sort(ids[[position[p] for p in shared]]) if shared else np.zeros(0, np.int64)


def psi_role(channel, table: PartyTable, config: PSIConfig) -> np.ndarray:
    """The registry's role function: PSI over ``table.ids``."""
    return intersect(channel, table.ids, config)


__all__ = ["PSIConfig", "blind", "hash_ids", "intersect", "psi_role"]
