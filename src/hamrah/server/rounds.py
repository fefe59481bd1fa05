"""A round's values and the Coordinator's pure decisions: who is drawn, who sat out, what the round
record says. No sockets and no clock of their own: the Coordinator passes times and the seeded rng in.
"""

from __future__ import annotations

import random
import statistics
import zlib
from dataclasses import dataclass, field
from typing import Any

from hamrah.core.errors import DataError, ProtocolError
from hamrah.core.metrics import merge_metrics, metric_values
from hamrah.core.params import Params, model_state
from hamrah.core.records import DeviceEval, PhaseTimings, RoundRecord, ServerCounts

MAX_EXAMPLES = 10**9  # the protocol's range for num_examples; the weight the server trusts is capped lower

# the round machine's phases (hamrah.server.machine)
DUE, SELECTING, REPORTING, COMMITTING, RETRY_WAIT, FINISHED = (
    "due",
    "selecting",
    "reporting",
    "committing",
    "retry_wait",
    "finished",
)


class LateReport(ProtocolError):
    """A report for a task whose round has closed or moved on: a straggler, ignored."""


@dataclass
class TaskInfo:
    """One device's task in a round, with the times the round machine noted (its clock)."""

    task_id: str
    device: str
    round: int
    aggregator: int
    kind: str = "train"  # train | evaluate
    status: str = "selected"  # selected | reported | aborted | failed
    assigned_at: float = 0.0
    downloaded_at: float | None = None
    train_s: float | None = None  # as the device states it
    upload_s: float | None = None


@dataclass
class RoundState:
    """One round in flight: the machine's selection/reporting state (``hamrah.server.machine``) and,
    below it, what the shell's aggregation keeps for the round (no asyncio, no protobuf)."""

    round: int
    attempt: int
    goal: int
    target: int
    started: float
    tasks: dict[str, TaskInfo] = field(default_factory=dict)
    selection_open: bool = True
    reporting_open: bool = False
    selection_deadline: float = 0.0
    reporting_deadline: float = 0.0
    selection_closed_at: float | None = None
    reporting_closed_at: float | None = None
    secure_mode: bool = False
    counted: int = 0  # reports the Aggregators hold towards the goal (from the last ReportArrived)
    refused: int = 0
    sites_out: int = 0  # cross-silo: sites that went out of the run holding a task of this round
    eval_target: int = 0
    candidates: list[str] = field(default_factory=list)  # check-ins waiting for the next draw
    draw_at: float | None = None
    # --- kept by the shell's aggregation (``hamrah.server.reports``, ``secure_rounds``) -------
    evals: list[tuple[int, dict]] = field(default_factory=list)  # (examples, metrics) of evaluate tasks
    personal: list[dict] = field(default_factory=list)  # personalized runs: each device's PERSONAL_METRICS
    secure: Any = None  # this round's ``hamrah.server.secure.SecureRound``, once selection has closed
    secure_ready: Any = None  # an asyncio.Event the shell sets when ``secure`` is ready (or never will be)
    clipped: int = 0  # reports whose delta was scaled down to the norm bound
    capped: int = 0  # reports whose num_examples was capped
    norms: list[float] = field(default_factory=list)  # L2 norms of accepted training deltas, before bounding
    held: list[tuple] = field(default_factory=list)  # (info, result, norm) waiting for a norm bound
    clip: float | None = None  # the norm bound the round's reports were clipped to
    aggregation_s: float = 0.0  # time spent decoding and folding reports in
    traffic: dict[str, list[int]] = field(default_factory=dict)  # [bytes up, bytes down] by Aggregator

    def moved(self, where: str, up: int = 0, down: int = 0) -> None:
        """Count bytes received from (``up``) and sent to (``down``) devices under ``where``: an
        Aggregator's index, ``"evaluate"`` (evaluation tasks) or ``"secagg"`` (the protocol's messages)."""
        counts = self.traffic.setdefault(where, [0, 0])
        counts[0] += up
        counts[1] += down

    def upload_deadline(self, reporting_timeout_s: float) -> float | None:
        """When this round stops waiting for reports (clock time): past it an upload still open only holds
        a slot; None for a secure round, whose stages time out on their own."""
        if self.secure_mode:
            return None
        return self.reporting_deadline if self.reporting_open else self.selection_deadline + reporting_timeout_s

    def count(self, status: str, kind: str = "train") -> int:
        return sum(t.status == status and t.kind == kind for t in self.tasks.values())

    def picked(self, kind: str = "train") -> int:
        return sum(t.kind == kind for t in self.tasks.values())

    def slots(self) -> int:
        return self.target + self.eval_target - len(self.tasks)

    def answered(self) -> bool:
        """Every task of the round has reported, aborted or failed."""
        return all(t.status != "selected" for t in self.tasks.values())


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
    names = {k: tuple(v.shape) for k, v in model_state(model).items()}
    if {k: tuple(v.shape) for k, v in saved.items()} != names:
        raise DataError(f"{where}: the checkpoint's parameters do not match the model {sorted(names)}")
    return {k: saved[k] for k in names}


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 3) if values else None


def phase_times(rs: RoundState, **later: float | None) -> PhaseTimings:
    """Return the round's phase timings known when reporting closed; ``later`` adds the shell's
    (``aggregation_s``, ``eval_s``, ``commit_s``, ``round_s``), rounded to milliseconds."""
    closed = rs.selection_closed_at if rs.selection_closed_at is not None else rs.started
    done = rs.reporting_closed_at if rs.reporting_closed_at is not None else closed
    train = [t for t in rs.tasks.values() if t.kind == "train"]
    return PhaseTimings(
        selection_s=round(closed - rs.started, 3),
        download_s=_mean([t.downloaded_at - t.assigned_at for t in train if t.downloaded_at is not None]),
        training_s=_mean([t.train_s for t in train if t.train_s is not None]),
        upload_s=_mean([t.upload_s for t in train if t.upload_s is not None]),
        reporting_s=round(done - closed, 3),
        **{k: (round(v, 3) if v is not None else None) for k, v in later.items()},
    )


def round_record(
    rs: RoundState, reported: int, train_loss: float, lost: int, phases: PhaseTimings, elapsed_s: float, **more
) -> RoundRecord:
    """Return the committed round's record.

    Args:
        rs: the round.
        reported: updates folded in (the Aggregators' count, or secure aggregation's contributors).
        train_loss: n_k-weighted mean training loss of those updates.
        lost: reports lost with failed Aggregators.
        phases: :func:`phase_times`.
        elapsed_s: run time so far, earlier processes included.
        more: other :class:`hamrah.core.records.RoundRecord` fields (test accuracy and loss,
            ``bytes_up``, ``epsilon``, ``extra``).
    """
    counts = ServerCounts(
        attempts=rs.attempt,
        goal=rs.goal,
        aborted=rs.count("aborted"),
        failed=rs.count("failed"),
        lost_with_aggregators=lost,
        clipped=rs.clipped,
        weight_capped=rs.capped,
        update_norm_median=statistics.median_low(rs.norms) if rs.norms else None,
        clip_norm=rs.clip,
        bytes_by_aggregator={k: (up, down) for k, (up, down) in sorted(rs.traffic.items())},
    )
    device_eval = None
    if rs.eval_target or rs.evals:  # evaluate tasks, or cross-silo sites scoring the model they trained from
        scored = device_scores(rs.evals)
        device_eval = DeviceEval(
            rs.picked("evaluate") if rs.eval_target else rs.picked("train"),
            len(rs.evals),
            scored.pop("accuracy", None),
            scored.pop("loss", None),
        )
        if scored:  # a user task's other metrics, merged with their reductions: device_auc, ...
            more["extra"] = {**more.get("extra", {}), **{f"device_{k}": v for k, v in scored.items()}}
    if rs.personal:  # each device's global and own model on its held-out examples, averaged over devices
        more["extra"] = {**more.get("extra", {}), **personal_scores(rs.personal)}
    return RoundRecord(
        rs.round,
        bytes_up=sum(up for up, _ in rs.traffic.values()),
        bytes_down=sum(down for _, down in rs.traffic.values()),
        train_loss=train_loss,
        clients=reported,
        elapsed_s=round(elapsed_s, 3),
        selected=rs.picked("train"),
        refused=rs.refused,
        phases=phases,
        server=counts,
        device_eval=device_eval,
        **more,
    )


def personal_scores(reports: list[dict]) -> dict[str, float]:
    """Return devices' personal metrics averaged over devices (each counts once, as the simulator's
    clients do): ``device_local_accuracy``, ``device_personal_accuracy``, the losses and ``personal_reported``."""
    out: dict[str, float] = {"personal_reported": float(len(reports))}
    for name in ("local_loss", "local_accuracy", "personal_loss", "personal_accuracy"):
        values = [m[name] for m in reports if name in m]
        if values:
            out[f"device_{name}"] = sum(values) / len(values)
    return out


def device_scores(evals) -> dict[str, float]:
    """Return devices' evaluations ``[(weight, metrics)]`` merged: ``loss`` and ``accuracy`` weighted by
    each device's (capped) weight, and a user task's other metrics (``metrics["task"]``, with their
    reductions) merged as the simulator merges clients' (``merge_metrics``)."""
    out: dict[str, float] = {}
    for name in ("accuracy", "loss"):
        having = [(k, m[name]) for k, m in evals if name in m]
        n = sum(k for k, _ in having)
        if n:
            out[name] = sum(k * v for k, v in having) / n
    merged: dict = {}
    for _, m in evals:
        merged = merge_metrics(merged, m.get("task", {}))
    out.update({k: v for k, v in metric_values(merged).items() if k not in ("accuracy", "loss")})
    return out


__all__ = [
    "MAX_EXAMPLES",
    "LateReport",
    "RoundState",
    "TaskInfo",
    "client_id",
    "device_scores",
    "draw",
    "in_model_order",
    "no_shows",
    "phase_times",
    "round_record",
]
