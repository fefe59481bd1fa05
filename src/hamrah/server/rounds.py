"""A round's values and the Coordinator's pure decisions: who is drawn, who sat out, what the round
record says. No sockets and no clock of their own: the Coordinator passes times and the seeded rng in.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import zlib
from dataclasses import dataclass, field

from hamrah.core.errors import DataError, ProtocolError
from hamrah.core.params import Params
from hamrah.server.secure import SecureRound

MAX_EXAMPLES = 10**9  # the protocol's range for num_examples; the weight the server trusts is capped lower


class LateReport(ProtocolError):
    """A report for a task whose round has closed or moved on: a straggler, ignored."""


@dataclass(frozen=True)
class RunPlan:
    """The ``[run]`` settings the server honours."""

    rounds: int
    seed: int = 0
    eval_every: int = 1
    target_accuracy: float | None = None
    stop_at_target: bool = False


@dataclass
class TaskInfo:
    task_id: str
    device: str
    round: int
    aggregator: int
    kind: str = "train"  # train | evaluate
    status: str = "selected"  # selected | reported | aborted | failed


@dataclass
class RoundState:
    round: int
    attempt: int
    goal: int
    target: int
    started: float
    tasks: dict[str, TaskInfo] = field(default_factory=dict)
    selection_open: bool = True
    reporting_open: bool = False
    reporting_deadline: float = 0.0
    selected: asyncio.Event = field(default_factory=asyncio.Event)
    progress: asyncio.Event = field(default_factory=asyncio.Event)
    refused: int = 0
    eval_target: int = 0
    evals: list[tuple[int, dict]] = field(default_factory=list)  # (examples, metrics) of evaluate tasks
    secure: SecureRound | None = None  # this round's secure aggregation, once selection has closed
    secure_ready: asyncio.Event = field(default_factory=asyncio.Event)
    candidates: dict[str, asyncio.Future] = field(default_factory=dict)  # check-ins waiting for the next draw
    draw: asyncio.TimerHandle | None = None
    clipped: int = 0  # reports whose delta was scaled down to the norm bound
    capped: int = 0  # reports whose num_examples was capped
    norms: list[float] = field(default_factory=list)  # L2 norms of accepted training deltas, before bounding
    held: list[tuple] = field(default_factory=list)  # (info, result, norm) waiting for a norm bound
    clip: float | None = None  # the norm bound the round's reports were clipped to

    def count(self, status: str, kind: str = "train") -> int:
        return sum(t.status == status and t.kind == kind for t in self.tasks.values())

    def picked(self, kind: str = "train") -> int:
        return sum(t.kind == kind for t in self.tasks.values())

    def slots(self) -> int:
        return self.target + self.eval_target - len(self.tasks)


def draw(candidates: list[str], slots: int, rng: random.Random) -> set[str]:
    """Return the candidates selected for ``slots`` places: all of them if they fit, else a uniform
    random sample drawn from ``rng`` (seeded; the candidates are sorted first, so the draw does not
    depend on arrival order).

    Args:
        candidates: device keys that checked in during one selection window (distinct).
        slots: places left in the round (<= 0: none).
        rng: the Coordinator's seeded generator.
    """
    if slots <= 0:
        return set()
    if len(candidates) <= slots:
        return set(candidates)
    return set(rng.sample(sorted(candidates), slots))


def no_shows(rs: RoundState) -> list[str]:
    """Return the devices that held a training task of ``rs`` through reporting and never answered."""
    return sorted(t.device for t in rs.tasks.values() if t.kind == "train" and t.status == "selected")


def client_id(device: str) -> int:
    """Return a stable integer id for a device key (its first 8 hex digits, else a CRC32 of the key:
    anonymous keys such as ``anon-ipv4:127.0.0.1:5000`` are not hex)."""
    try:
        return int(device[:8], 16)
    except ValueError:
        return zlib.crc32(device.encode("utf-8", "replace"))


def in_model_order(saved: Params, model, where) -> Params:
    """Return checkpointed params in the model's parameter order (checkpoints store names sorted;
    payload specs compare names in order).

    Raises:
        DataError: the checkpoint's names or shapes do not match the model.
    """
    names = {k: tuple(v.shape) for k, v in model.named_parameters()}
    if {k: tuple(v.shape) for k, v in saved.items()} != names:
        raise DataError(f"{where}: the checkpoint's parameters do not match the model {sorted(names)}")
    return {k: saved[k] for k in names}


def round_record(rs: RoundState, reported: int, train_loss: float, lost: int, t_sel: float, t_rep: float) -> dict:
    """Return the committed round's record (counts and phase times; evaluation fields are added later)."""
    record = {"round": rs.round, "attempts": rs.attempt, "selected": rs.picked("train"), "goal": rs.goal,
              "reported": reported, "aborted": rs.count("aborted"), "failed": rs.count("failed"),
              "refused": rs.refused, "lost_with_aggregators": lost, "train_loss": train_loss,
              "clipped": rs.clipped, "weight_capped": rs.capped,
              "update_norm_median": statistics.median_low(rs.norms) if rs.norms else None, "clip_norm": rs.clip,
              "selection_s": round(t_sel, 3), "reporting_s": round(t_rep, 3)}
    record["dropped"] = record["selected"] - record["reported"]
    if rs.eval_target:
        n = sum(k for k, _ in rs.evals)
        record.update(eval_selected=rs.picked("evaluate"), eval_reported=len(rs.evals),
                      device_accuracy=sum(k * m["accuracy"] for k, m in rs.evals) / n if n else None,
                      device_loss=sum(k * m["loss"] for k, m in rs.evals) / n if n else None)
    return record


__all__ = [
    "MAX_EXAMPLES",
    "LateReport",
    "RoundState",
    "RunPlan",
    "TaskInfo",
    "client_id",
    "draw",
    "in_model_order",
    "no_shows",
    "round_record",
]
