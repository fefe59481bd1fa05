"""ECDH private set intersection for two or more parties, on X25519.

Meadows 1986 / Huberman, Franklin and Hogg 1999: each party ``i`` draws a secret scalar ``k_i``; an
id ``x`` becomes the point ``H(x)``, and ``H(x)^(k_1 ... k_m)`` (every party's key applied, in any
order, since scalar multiplication commutes) is equal for two parties exactly when their ids are.

Hashing to the group and blinding: :mod:`hamrah.vertical.psi_blind`.

Rounds, with the parties in a ring (the leader first, then the others by name): every party tells
every other the size of its set; each hashes and blinds its own ids in a secret random order and
passes the list along the ring; each party applies its key to the list it receives (of exactly the
size its owner announced) and passes it on, so after ``m`` hops every list carries all keys and is
back with its owner, who knows which id sits at each position. The others send their fully blinded
values, sorted, to the leader; the leader keeps its own ids whose value is in every set and sends
back the fully blinded values of the intersection, sorted; each party maps them to its ids.

Whoever applies the last key to a list knows that list's fully blinded set: the party before the
leader knows the leader's, and could claim those values as its own to make the leader take ids it
does not hold for shared. So the leader takes no party's word for its own set: the party that
blinded a list last (the leader itself for the party after it; for every other party ``ring[j]``,
``ring[j-1]``, which sends it as ``psi/witness``) vouches for it, and a ``psi/set`` that differs from
that set in any value is refused, naming both. A single deviating party therefore cannot add a value
to its set (nor drop one): the leader's result is exactly the intersection of the lists the parties
blinded. What a deviating party can still do: choose its input (any ids it likes, as in any PSI);
two adjacent parties together can still add the leader's values (the later one knows them, the
earlier one vouches for its set); a relaying party can
blind a list wrongly or reorder it, so that its owner maps the result to wrong ids or finds nothing
shared (detected only as far as the sizes go); the leader decides the result, and each party only
checks it is a subset of its own set (a lying leader can withhold shared ids or name more of a
party's own ids as shared, never one the party does not hold).

What each party learns: the intersection (its ids), and the sizes of the other parties' sets. With
three or more parties the leader also sees every other party's fully blinded set, so it can count how
many values two of them share outside its own set (e.g. ``|H1 ∩ H2|``), never which ids; the witness
sends the leader a set it gets from that party anyway. Blinded values carry no id without every key.

Lists travel in chunks of ``chunk`` ids, so no message grows with the set (a 1e7-id list is 320 MB)
and a relaying party blinds one chunk while the next is on the wire; with ``workers`` > 1 a pool of
processes blinds several chunks at once (each worker is given the party's scalar).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from hamrah.core.errors import ConfigError, DataError, ProtocolError
from hamrah.vertical.psi_blind import POINT, Blinder, blind, hash_ids

if TYPE_CHECKING:  # a worker process imports this module: keep torch out of it
    from hamrah.data.vertical import PartyTable

_EMPTY = np.zeros((0, POINT), np.uint8)
REPORT_EVERY = 1 << 20  # ids between two progress reports within a list
_MAX_SETTINGS = 4096  # characters of a psi/hello's settings (the leader's name and the kind of ids)
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


def _recv_list(channel, frm: str, tag: str, most: int, exact: str = "") -> Iterator[np.ndarray]:
    """Yield a list's chunks from ``frm`` until its empty last chunk; refuse a malformed chunk, more
    than ``most`` values in all, or (``exact`` names whose list it is) fewer."""
    total = 0
    while True:
        arr = channel.recv(frm, tag).get("points")
        if not isinstance(arr, np.ndarray) or arr.dtype != np.uint8 or arr.ndim != 2 or arr.shape[1] != POINT:
            raise ProtocolError(f"psi: from {frm!r}, expected 'points' as a uint8 array of shape (k, {POINT})")
        if len(arr) == 0:
            break
        total += len(arr)
        if total > most:
            raise ProtocolError(f"psi: {frm!r} sent more than {most} values in its {tag!r} list{exact}")
        yield arr
    if exact and total != most:
        raise ProtocolError(f"psi: {frm!r} sent {total} values in its {tag!r} list, expected {most}{exact}")


def _vouched(chunks: Iterable[np.ndarray], known: np.ndarray, frm: str, witness: str) -> Iterator[np.ndarray]:
    """Pass on ``frm``'s ``psi/set`` chunks (its size already checked), refusing a value outside
    ``known`` (sorted ``S32``): ``frm``'s fully blinded list as ``witness`` blinded it last."""
    for c in chunks:
        v = np.ascontiguousarray(c).view(f"S{POINT}").ravel()
        pos = np.minimum(np.searchsorted(known, v), max(len(known) - 1, 0))
        if len(known) == 0 or np.any(known[pos] != v):
            raise ProtocolError(
                f"psi: {frm!r} sent in its 'psi/set' list {int(np.sum(known[pos] != v)) if len(known) else len(v)} "
                f"values that are not its own fully blinded ids; expected only the {len(known)} values {witness!r} "
                f"blinded last for it (one of {frm!r} and {witness!r} deviates from the protocol)"
            )
        yield c


def _sorted(chunks: Iterable[np.ndarray]) -> np.ndarray:
    return np.sort(_concat(chunks).view(f"S{POINT}").ravel())


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


def _agree(channel, ring: tuple[str, ...], settings: dict, size: int) -> dict[str, int]:
    """Every PSI party tells every other its ``settings`` (the leader, the kind of ids) and the size of
    its set before any id is blinded: parties set up differently stop at once, the difference named,
    instead of waiting on each other or intersecting ids read differently. Return every party's size."""
    others = [p for p in ring if p != channel.name]
    for peer in others:
        channel.send(peer, "psi/hello", {"settings": json.dumps(settings), "size": size})
    sizes = {channel.name: size}
    for peer in others:
        msg, theirs = channel.recv(peer, "psi/hello"), None
        if isinstance(msg.get("settings"), str) and len(msg["settings"]) <= _MAX_SETTINGS:
            try:
                theirs = json.loads(msg["settings"])
            except (ValueError, RecursionError):
                pass
        if not isinstance(theirs, dict):
            raise ProtocolError(
                f"psi/hello from {peer!r}: expected its settings as a JSON object of at most {_MAX_SETTINGS} characters"
            )
        sizes[peer] = msg.get("size")  # type: ignore[assignment]
        if isinstance(sizes[peer], bool) or not isinstance(sizes[peer], int) or not 0 <= sizes[peer] < 1 << 40:
            raise ProtocolError(f"psi/hello from {peer!r}: expected 'size', its number of ids, in 0..2^40")
        for key, value in settings.items():
            if theirs.get(key) != value:
                raise ConfigError(
                    f"psi: {peer!r} runs with {key} = {theirs.get(key)!r}, {channel.name!r} with {value!r}; "
                    "every party needs the same"
                )
    return sizes


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
    sizes: dict[str, int] | None = None,
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
        sizes: if given, filled with every party's set size, as each announced it (every list it sent
            had that size): what a protocol run next can hold a party's later claims to.

    Returns:
        The ids every party holds, sorted.

    Raises:
        DataError: duplicate ids. ConfigError: the leader is not a party, or another party was set up
            with another leader or id_type.
        ProtocolError: a malformed list, a list of another size than its owner announced, a set that
            the party which blinded it last does not vouch for, or a result that is not a subset of this
            party's set.
    """
    ids = _check_ids(ids)
    ring = _ring(channel, config.leader, parties)
    me = ring.index(channel.name)
    nxt, prv = ring[(me + 1) % len(ring)], ring[me - 1]
    announced = _agree(channel, ring, {"leader": config.leader, "id_type": id_type}, len(ids))
    order = (rng or np.random.default_rng(np.random.SeedSequence())).permutation(len(ids))
    workers, report = _LOCAL.get()
    blinder = Blinder(config.workers or workers)
    on_epoch = on_epoch or report
    kept: list[np.ndarray] = []  # the list this party blinds last, unless it is the leader's
    try:
        own = blinder.stream(_chunks(ids[order], config.chunk), ids=True)
        _send_list(channel, nxt, "psi/ring1", own, on_epoch, "own ids", len(ids))
        for hop in range(1, len(ring)):
            tag = f"psi/ring{hop + 1}" if hop + 1 < len(ring) else "psi/full"
            owner = ring[(me - hop) % len(ring)]
            theirs = _recv_list(channel, prv, f"psi/ring{hop}", announced[owner], f" (the ids of {owner!r})")
            relayed = blinder.stream(theirs)
            if tag == "psi/full" and nxt != config.leader:
                relayed = (kept.append(c) or c for c in relayed)
            _send_list(channel, nxt, tag, relayed, on_epoch, f"the ids of {owner!r}")
        mine = _concat(_recv_list(channel, prv, "psi/full", len(ids)))
    finally:
        blinder.close()
    if len(mine) != len(ids):
        raise ProtocolError(f"psi: {prv!r} returned {len(mine)} blinded ids, expected this party's {len(ids)}")
    position = {p: int(i) for p, i in zip(_as_bytes(mine), order)}
    if channel.name == config.leader:
        common, known = set(position), _sorted(kept)  # the leader blinded ring[1]'s list last
        for j, peer in enumerate(ring[1:], 1):
            chunks = _recv_list(channel, peer, "psi/set", announced[peer], " (its fully blinded ids)")
            common = {p for c in _vouched(chunks, known, peer, ring[j - 1]) for p in _as_bytes(c) if p in common}
            if j + 1 < len(ring):  # peer blinded ring[j + 1]'s list last, and vouches for it
                witness = _recv_list(channel, peer, "psi/witness", announced[ring[j + 1]], f" (of {ring[j + 1]!r})")
                known = _sorted(witness)
        shared = sorted(common)
        for peer in ring[1:]:
            _send_list(channel, peer, "psi/result", _chunks(_as_points(shared), config.chunk))
    else:
        _send_list(channel, config.leader, "psi/set", _chunks(_as_points(sorted(position)), config.chunk))
        if nxt != config.leader:  # it blinded nxt's list last: it vouches for nxt's set
            witness = _sorted(kept).view(np.uint8).reshape(-1, POINT)
            _send_list(channel, config.leader, "psi/witness", _chunks(witness, config.chunk))
        shared = _as_bytes(_concat(_recv_list(channel, config.leader, "psi/result", len(ids))))
        if any(p not in position for p in shared):
            raise ProtocolError(f"psi: {config.leader!r} returned values that are not in this party's set")
    if sizes is not None:
        sizes.update(announced)
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


__all__ = ["POINT", "PSIConfig", "PSIProgress", "align", "blind", "hash_ids", "intersect", "local", "psi_role"]
