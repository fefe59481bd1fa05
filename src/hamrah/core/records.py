"""One round record for every driver, and one writer for its ``metrics.jsonl`` line and the run summary.

The simulator (``hamrah.simulation.Simulator``) and the server (``hamrah.server.coordinator``) both
produce a :class:`RoundRecord`; ``hamrah run`` and ``hamrah server`` write it with :func:`record_line`
and summarise a run with :func:`accuracy_summary`. Fields a driver does not know are None and are
left out of the line (the simulator has no selection or phases; the server evaluates only every
``eval_every`` rounds). No I/O here: the drivers write the strings this module returns.

Example:
    >>> rec = RoundRecord(3, 0.91, 0.3, 0.4, 10, 1.5)
    >>> record_line(rec)
    '{"round": 3, "test_accuracy": 0.91, "test_loss": 0.3, "train_loss": 0.4, "clients": 10, "elapsed_s": 1.5}'
    >>> accuracy_summary([rec], target=0.9)["rounds_to_target"]
    3.0
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from hamrah.core.targets import rounds_to_target


@dataclass(frozen=True)
class PhaseTimings:
    """Where a server round's time went, in seconds (None: the phase did not happen or was not measured).

    ``selection_s``: round opened -> selection closed. ``download_s``: mean, over training tasks that
    finished downloading, of task assigned -> last checkpoint byte sent. ``training_s``: mean local
    training time as the reporting devices state it (their ``duration_s`` metric; not verified).
    ``upload_s``: mean report header -> last payload byte received. ``reporting_s``: selection closed
    -> reporting closed. ``aggregation_s``: decoding and folding the reports in, merging the
    Aggregators' shares and the pipeline's server half. ``eval_s``: the test-set evaluation.
    ``commit_s``: the algorithm's server half and the finiteness checks (the durable write of the
    record itself comes after and is not in it). ``round_s``: round opened -> round record made.
    """

    selection_s: float | None = None
    download_s: float | None = None
    training_s: float | None = None
    upload_s: float | None = None
    reporting_s: float | None = None
    aggregation_s: float | None = None
    eval_s: float | None = None
    commit_s: float | None = None
    round_s: float | None = None


@dataclass(frozen=True)
class ServerCounts:
    """What the server's influence bounds and retries did in a round (``docs/reliability.md``), and
    the bytes each Aggregator's devices moved (keys: an Aggregator's index, ``"evaluate"`` for
    evaluation tasks, ``"secagg"`` for secure aggregation's protocol messages)."""

    attempts: int = 1
    goal: int = 0
    aborted: int = 0
    failed: int = 0
    lost_with_aggregators: int = 0
    clipped: int = 0
    weight_capped: int = 0
    update_norm_median: float | None = None
    clip_norm: float | None = None
    bytes_by_aggregator: Mapping[str, tuple[int, int]] = field(default_factory=dict)  # (up, down) by Aggregator


@dataclass(frozen=True)
class DeviceEval:
    """Federated evaluation: devices that scored the round's model on their own examples."""

    eval_selected: int
    eval_reported: int
    device_accuracy: float | None
    device_loss: float | None


@dataclass(frozen=True)
class RoundRecord:
    """One round, as the simulator and the server record it.

    The first nine fields are positional (the simulator builds them in this order); ``clients`` is
    the number of clients whose update was folded in (the server's ``reported``). ``selected``,
    ``dropped`` (selected - reported) and ``refused`` (messages refused during the round) are the
    server's; ``extra`` holds a pipeline's fields (``delta``, ``pipeline_state``, secure
    aggregation's ``secagg_survivors``, ...), written as they are.
    """

    round: int
    test_accuracy: float | None = None
    test_loss: float | None = None
    train_loss: float = math.nan
    clients: int = 0
    elapsed_s: float = 0.0
    bytes_up: int | None = None
    bytes_down: int | None = None
    epsilon: float | None = None
    selected: int | None = None
    refused: int | None = None
    phases: PhaseTimings | None = None
    server: ServerCounts | None = None
    device_eval: DeviceEval | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def dropped(self) -> int | None:
        """Selected training devices whose update was not folded in (None without selection)."""
        return None if self.selected is None else self.selected - self.clients

    def to_dict(self) -> dict[str, Any]:
        """Return the flat dict written as one ``metrics.jsonl`` line (the keys users and tests read).

        Top-level fields that are None are left out; the server's counts are always all written;
        a server record also carries ``reported`` (= ``clients``) and ``dropped``.
        """
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("phases", "server", "device_eval", "extra") or value is None:
                continue
            out[f.name] = value
        if self.selected is not None:
            out.update(reported=self.clients, dropped=self.dropped)
        if self.server is not None:
            out.update({f.name: getattr(self.server, f.name) for f in fields(self.server)})
        if self.device_eval is not None:
            out.update({f.name: getattr(self.device_eval, f.name) for f in fields(self.device_eval)})
        if self.phases is not None:
            out.update(
                {
                    f.name: getattr(self.phases, f.name)
                    for f in fields(self.phases)
                    if getattr(self.phases, f.name) is not None
                }
            )
        out.update(self.extra)
        return out


def finite(obj: Any) -> Any:
    """Return ``obj`` with every non-finite float (NaN, +-inf) replaced by None, recursively."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


def finite_json(obj: Any, **kw: Any) -> str:
    """Return ``obj`` as standard JSON: NaN and infinities become null (never ``NaN``/``Infinity``)."""
    return json.dumps(finite(obj), allow_nan=False, **kw)


def record_line(record: RoundRecord | Mapping[str, Any]) -> str:
    """Return one ``metrics.jsonl`` line (standard JSON, no trailing newline) for a round record.

    Args:
        record: a :class:`RoundRecord`, or a record already flattened by :meth:`RoundRecord.to_dict`
            (the server reads those back from its state database).
    """
    return finite_json(record.to_dict() if isinstance(record, RoundRecord) else dict(record))


def accuracy_summary(records: Iterable[RoundRecord | Mapping[str, Any]], target: float | None) -> dict[str, Any]:
    """Return the summary's accuracy fields over a run's records (evaluated rounds only).

    Args:
        records: the run's round records, in order (typed or flattened).
        target: ``run.target_accuracy`` or None.

    Returns:
        ``final_accuracy``, ``best_accuracy`` (None when no round was evaluated) and
        ``rounds_to_target`` (:func:`hamrah.core.targets.rounds_to_target`; None without a target or
        when it was not reached).
    """
    pairs = []
    for rec in records:
        flat = rec.to_dict() if isinstance(rec, RoundRecord) else rec
        acc = flat.get("test_accuracy")
        if acc is not None:
            pairs.append((flat["round"], float(acc)))
    rounds, accs = [r for r, _ in pairs], [a for _, a in pairs]
    return {
        "final_accuracy": accs[-1] if accs else None,
        "best_accuracy": max(accs) if accs else None,
        "rounds_to_target": rounds_to_target(rounds, accs, target) if target is not None and accs else None,
    }


__all__ = [
    "DeviceEval",
    "PhaseTimings",
    "RoundRecord",
    "ServerCounts",
    "accuracy_summary",
    "finite",
    "finite_json",
    "record_line",
]
