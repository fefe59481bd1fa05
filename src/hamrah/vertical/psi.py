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

Lists travel in chunks of ``chunk`` ids, so no message grows with the set (a 1e7-id list is 320 MB)
and a relaying party blinds one chunk while the next is on the wire; with ``workers`` > 1 a pool of
processes blinds several chunks at once (each worker is given the party's scalar).
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from hamrah.core.errors import ConfigError, DataError, ProtocolError

if TYPE_CHECKING:  # a worker process imports this module: keep torch out of it
    from hamrah.data.vertical import PartyTable

POINT = 32
_EMPTY = np.zeros((0, POINT), np.uint8)
REPORT_EVERY = 1 << 20  # ids between two progress reports within a list
_LOCAL: ContextVar[tuple[int, Callable | None]] = ContextVar("psi_local", default=(1, None))


@contextmanager
def local(workers: int = 1, report: Callable[[PSIProgress], None] | None = None) -> Iterator[None]:
    """Set, for the PSI steps that protocols run in this context (this thread), the processes that blind
    and where progress goes: what a party's ``[party] workers`` and ``hamrah party``'s output set;
    local to the party, so the parties need not agree. An explicit setting of :func:`intersect` wins."""
    PSIConfig(workers=workers)  # checks the count
    token = _LOCAL.set((workers, report))
    try:
        yield
    finally:
        _LOCAL.reset(token)


@dataclass(frozen=True)
class PSIProgress:
    """How far a party is: ``done`` values of the list ``what`` blinded (``total`` when known)."""

    what: str
    done: int
    total: int | None = None
    finished: bool = False

    def progress(self) -> str:
        """Return a one-line report."""
        of = f" of {self.total:,}" if self.total is not None else ""
        return f"psi: {self.what}: {self.done:,}{of} ids blinded" + (" (list done)" if self.finished else "")


@dataclass(frozen=True)
class PSIConfig:
    """Settings of PSI.

    Attributes:
        leader: the party that computes the intersection and tells the others (the guest).
        workers: processes that blind this party's lists (1: the party's own thread; ``None``: as
            many as :func:`local` sets in this context, which ``[party] workers`` sets, else 1).
        chunk: ids per message (32 bytes each); lists of any length stream in chunks of this size.
    """

    leader: str = "guest"
    workers: int | None = None
    chunk: int = 1 << 15

    def __post_init__(self) -> None:
        if not isinstance(self.leader, str) or not self.leader:
            raise ConfigError(f"psi.leader: expected a party name, got {self.leader!r}")
        for name, high in (("workers", 1024), ("chunk", 1 << 24)):
            value = getattr(self, name)
            if name == "workers" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= high:
                raise ConfigError(f"psi.{name}: expected an integer in 1..{high}, got {value!r}")


def hash_ids(ids: np.ndarray) -> np.ndarray:
    """Return each int64 id hashed to an X25519 u-coordinate, as a ``(n, 32)`` uint8 array."""
    out = bytearray()
    for v in np.asarray(ids, dtype=np.int64).tolist():
        out += hashlib.sha256(b"hamrah-psi|" + int(v).to_bytes(8, "little", signed=True)).digest()
    points = np.frombuffer(out, dtype=np.uint8).reshape(-1, POINT).copy()
    points[:, 31] &= 0x7F
    return points


def blind(key: X25519PrivateKey | bytes, points: np.ndarray) -> np.ndarray:
    """Return ``points`` (``(n, 32)`` uint8) multiplied by ``key``'s scalar (a key or its raw bytes).

    Raises:
        ProtocolError: a point of small order (only a hostile party sends one).
    """
    if isinstance(key, bytes):
        key = X25519PrivateKey.from_private_bytes(key)
    data = np.ascontiguousarray(points, dtype=np.uint8).tobytes()
    try:
        out = b"".join(
            key.exchange(X25519PublicKey.from_public_bytes(data[i : i + POINT])) for i in range(0, len(data), POINT)
        )
    except ValueError:
        raise ProtocolError("psi: a received value is a point of small order (not a blinded id)") from None
    return np.frombuffer(out, dtype=np.uint8).reshape(-1, POINT)


def _hash_and_blind(key: bytes, ids: np.ndarray) -> np.ndarray:
    return blind(key, hash_ids(ids))


class _Blinder:
    """Blinds a stream of chunks in order, in this thread or in a pool of ``workers`` processes."""

    def __init__(self, workers: int):
        self._raw = X25519PrivateKey.generate().private_bytes_raw()  # the party's secret scalar
        self.workers = workers
        self._pool = ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) if workers > 1 else None

    def stream(self, chunks: Iterable[np.ndarray], ids: bool = False) -> Iterator[np.ndarray]:
        """Yield each chunk blinded (``ids``: chunks of ids, hashed first), keeping ``2 workers`` in flight."""
        fn = _hash_and_blind if ids else blind
        if self._pool is None:
            for c in chunks:
                yield fn(self._raw, c)
            return
        pending: list[Future] = []
        for c in chunks:
            pending.append(self._pool.submit(fn, self._raw, c))
            if len(pending) >= 2 * self.workers:
                yield pending.pop(0).result()
        for f in pending:
            yield f.result()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)


def _send_list(
    channel,
    to: str,
    tag: str,
    chunks: Iterable[np.ndarray],
    report: Callable[[PSIProgress], None] | None = None,
    what: str = "",
    total: int | None = None,
) -> None:
    """Send a list as its chunks, then an empty chunk that ends it; ``report`` progress now and then."""
    done, last = 0, 0
    for c in chunks:
        if len(c):
            channel.send(to, tag, {"points": c})
        done += len(c)
        if report is not None and done - last >= REPORT_EVERY:
            report(PSIProgress(what, done, total))
            last = done
    channel.send(to, tag, {"points": _EMPTY})
    if report is not None:
        report(PSIProgress(what, done, total, finished=True))


def _recv_list(channel, frm: str, tag: str, most: int | None = None) -> Iterator[np.ndarray]:
    """Yield a list's chunks from ``frm`` until its empty last chunk; refuse a malformed chunk, or more
    than ``most`` values in all."""
    total = 0
    while True:
        arr = channel.recv(frm, tag).get("points")
        if not isinstance(arr, np.ndarray) or arr.dtype != np.uint8 or arr.ndim != 2 or arr.shape[1] != POINT:
            raise ProtocolError(f"psi: from {frm!r}, expected 'points' as a uint8 array of shape (k, {POINT})")
        if len(arr) == 0:
            return
        total += len(arr)
        if most is not None and total > most:
            raise ProtocolError(f"psi: {frm!r} sent more than {most} values in its {tag!r} list")
        yield arr


def _only(chunks: Iterable[np.ndarray], known: np.ndarray, frm: str) -> Iterator[np.ndarray]:
    """Pass on ``frm``'s ``psi/set`` chunks, refusing a value outside ``known`` (sorted ``S32``): the
    fully blinded ids of ``frm``'s own list, as this party blinded them."""
    for c in chunks:
        v = np.ascontiguousarray(c).view(f"S{POINT}").ravel()
        pos = np.minimum(np.searchsorted(known, v), max(len(known) - 1, 0))
        if len(known) == 0 or np.any(known[pos] != v):
            raise ProtocolError(
                f"psi: {frm!r} sent in its 'psi/set' list {int(np.sum(known[pos] != v)) if len(known) else len(v)} "
                f"values that are not its own fully blinded ids; expected only values of the {len(known)} this "
                "party blinded for it"
            )
        yield c


def _chunks(arr: np.ndarray, size: int) -> Iterator[np.ndarray]:
    return (arr[i : i + size] for i in range(0, len(arr), size))


def _concat(chunks: Iterable[np.ndarray]) -> np.ndarray:
    parts = list(chunks)
    return np.concatenate(parts) if parts else _EMPTY


def _as_bytes(points: np.ndarray) -> list[bytes]:
    data = points.tobytes()
    return [data[i : i + POINT] for i in range(0, len(data), POINT)]


def _as_points(values: list[bytes]) -> np.ndarray:
    return np.frombuffer(b"".join(values), np.uint8).reshape(-1, POINT)


def _ring(channel, leader: str, parties: tuple[str, ...] | None) -> tuple[str, ...]:
    names = set(parties or channel.peers) | {channel.name}
    if leader not in names:
        raise ConfigError(
            f"psi.leader = {leader!r}: not one of the parties {sorted(names)} (inside a protocol the leader is "
            "its guest: [protocol] guest must be the guest's party name)"
        )
    return (leader,) + tuple(sorted(names - {leader}))


def _agree(channel, ring: tuple[str, ...], settings: dict) -> None:
    """Every PSI party tells every other its ``settings`` (the leader, the kind of ids) before any id is
    blinded: parties set up differently stop at once, the difference named, instead of waiting on
    each other or intersecting ids read differently."""
    others = [p for p in ring if p != channel.name]
    for peer in others:
        channel.send(peer, "psi/hello", {"settings": json.dumps(settings)})
    for peer in others:
        try:
            theirs = json.loads(channel.recv(peer, "psi/hello")["settings"])
        except (KeyError, TypeError, ValueError):
            theirs = None
        if not isinstance(theirs, dict):
            raise ProtocolError(f"psi/hello from {peer!r}: expected its settings as a JSON object")
        for key, value in settings.items():
            if theirs.get(key) != value:
                raise ConfigError(
                    f"psi: {peer!r} runs with {key} = {theirs.get(key)!r}, {channel.name!r} with {value!r}; "
                    "every party needs the same"
                )


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
    on_epoch: Callable[[PSIProgress], None] | None = None,
    id_type: str = "int",
) -> np.ndarray:
    """Run PSI as the party behind ``channel`` and return the shared ids, sorted.

    Args:
        channel: this party's channel; its peers are the other PSI parties.
        ids: this party's int64 ids, unique.
        config: which party leads, how many worker processes blind, ids per message.
        rng: shuffles the party's list (``None``: the OS CSPRNG). The X25519 key always comes from the OS.
        parties: the PSI parties (default: this party and all its peers; an arbiter stays out).
        on_epoch: called with a :class:`PSIProgress` after each list this party blinded and every
            ``REPORT_EVERY`` ids within one (``None``: the context's, :func:`local`).
        id_type: how the party read its ids (``"int"``, or ``"str"``: ``ids`` are digests of text);
            every party must read them the same way, and the same ``leader``, or all stop at the start.

    Returns:
        The ids every party holds, sorted.

    Raises:
        DataError: duplicate ids. ConfigError: the leader is not a party, or another party was set up
            with another leader or id_type.
        ProtocolError: a malformed list, or a result that is not a subset of this party's set.
    """
    ids = _check_ids(ids)
    ring = _ring(channel, config.leader, parties)
    me = ring.index(channel.name)
    nxt, prv = ring[(me + 1) % len(ring)], ring[me - 1]
    _agree(channel, ring, {"leader": config.leader, "id_type": id_type})
    order = (rng or np.random.default_rng(np.random.SeedSequence())).permutation(len(ids))
    workers, report = _LOCAL.get()
    blinder = _Blinder(config.workers or workers)
    on_epoch = on_epoch or report
    kept: list[np.ndarray] = []
    try:
        own = blinder.stream(_chunks(ids[order], config.chunk), ids=True)
        _send_list(channel, nxt, "psi/ring1", own, on_epoch, "own ids", len(ids))
        for hop in range(1, len(ring)):
            tag = f"psi/ring{hop + 1}" if hop + 1 < len(ring) else "psi/full"
            relayed = blinder.stream(_recv_list(channel, prv, f"psi/ring{hop}"))
            if tag == "psi/full" and me == 0:  # the leader blinds ring[1]'s list last: it keeps that set
                relayed = (kept.append(c) or c for c in relayed)
            _send_list(channel, nxt, tag, relayed, on_epoch, f"the ids of {ring[(me - hop) % len(ring)]!r}")
        mine = _concat(_recv_list(channel, prv, "psi/full", len(ids)))
    finally:
        blinder.close()
    if len(mine) != len(ids):
        raise ProtocolError(f"psi: {prv!r} returned {len(mine)} blinded ids, expected this party's {len(ids)}")
    position = {p: int(i) for p, i in zip(_as_bytes(mine), order)}
    if channel.name == config.leader:
        common, known = set(position), np.sort(_concat(kept).view(f"S{POINT}").ravel())
        for peer in ring[1:]:
            chunks = _recv_list(channel, peer, "psi/set")
            if peer == ring[1]:  # with two parties it blinded the leader's list last: none of those may come back
                chunks = _only(chunks, known, peer)
            common = {p for c in chunks for p in _as_bytes(c) if p in common}
        shared = sorted(common)
        for peer in ring[1:]:
            _send_list(channel, peer, "psi/result", _chunks(_as_points(shared), config.chunk))
    else:
        _send_list(channel, config.leader, "psi/set", _chunks(_as_points(sorted(position)), config.chunk))
        shared = _as_bytes(_concat(_recv_list(channel, config.leader, "psi/result", len(ids))))
        if any(p not in position for p in shared):
            raise ProtocolError(f"psi: {config.leader!r} returned values that are not in this party's set")
    return np.sort(ids[[position[p] for p in shared]]) if shared else np.zeros(0, np.int64)


def align(
    channel, table: PartyTable, leader: str, parties: tuple[str, ...] | None = None, protocol: str = "psi"
) -> PartyTable:
    """Keep the rows of ``table`` whose ids every party holds (PSI led by ``leader``), sorted by id.

    Raises:
        DataError: the parties share no id.
    """
    shared = intersect(channel, table.ids, PSIConfig(leader), parties=parties, id_type=_id_type(table))
    if len(shared) == 0:
        raise DataError(
            f"{protocol}: the parties share no ids (do all of them read their ids with the same [data] id_type?)"
        )
    return table.select(shared)


def psi_role(
    channel, table: PartyTable, config: PSIConfig, on_epoch: Callable[[PSIProgress], None] | None = None
) -> np.ndarray:
    """The registry's role function: PSI over ``table.ids``."""
    return intersect(channel, table.ids, config, on_epoch=on_epoch, id_type=_id_type(table))


def _id_type(table: PartyTable) -> str:
    return "int" if table.keys is None else "str"


__all__ = ["PSIConfig", "PSIProgress", "align", "blind", "hash_ids", "intersect", "local", "psi_role"]
