"""The FL plan: what a device runs in a task, as versioned JSON (the weights travel separately).

A plan names the task the device runs (:class:`TaskRef`: name, version, digest; never its code: code is
never shipped or unpickled over the wire). A built-in model's plan is version 1 and still carries its
``ModelSpec`` (a device built before tasks reads it and ignores the ``task`` key); a user task's plan is
version 2, has no ``ModelSpec``, and runs only on a device with that task installed at the same digest
(a version-1 runtime refuses it in one line: ``plan: version 2, this runtime speaks version 1``).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field

from hamrah.core.errors import ProtocolError
from hamrah.models import MODELS, ModelSpec

PLAN_VERSION = 2  # the newest plan this runtime writes and reads; version 1 = a built-in model's plan
VERSIONS = (1, 2)
KINDS = ("train", "evaluate")
CROSS_SILO_KEY = "cross_silo"  # in ``Plan.extra``: the task is a cross-silo site's, {"eval_fraction": f}
EXAMPLE_PRIVACY_KEY = "example_privacy"  # DP-SGD runs: {"delta", "target_epsilon", "accountant"} of each client
DP_EPSILON = "dp_epsilon"  # in a DP-SGD report's metrics: the example-level epsilon the device's store has spent
PERSONAL_KEY = "personalization"  # personalized runs: {"holdout": f}, the share of a device's examples it scores on
PERSONAL_METRICS = ("held_examples", "local_loss", "local_accuracy", "personal_loss", "personal_accuracy")
"""What a device of a personalized run reports beside its update: the round's global model and its own
model scored on its held-out examples (accuracy absent for a task without one)."""


def personal_holdout(extra: dict) -> float | None:
    """Return the share of its examples a device of a personalized run holds out (None: not personalized).

    Raises:
        ProtocolError: the entry is malformed.
    """
    entry = extra.get(PERSONAL_KEY)
    if entry is None:
        return None
    share = entry.get("holdout") if isinstance(entry, dict) else None
    if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 < share < 1:
        raise ProtocolError(f"plan: {PERSONAL_KEY}.holdout = {share!r}: expected a number in (0, 1)")
    return float(share)


def example_privacy(extra: dict) -> tuple[float, float | None, str]:
    """Return a DP-SGD plan's (delta, target_epsilon or None, accountant) from ``Plan.extra``.

    Raises:
        ProtocolError: the entry is missing or malformed.
    """
    entry = extra.get(EXAMPLE_PRIVACY_KEY)
    if not isinstance(entry, dict):
        raise ProtocolError(f"plan: DP-SGD training without extra.{EXAMPLE_PRIVACY_KEY} (delta, target_epsilon)")
    delta, target, accountant = entry.get("delta"), entry.get("target_epsilon"), entry.get("accountant", "rdp")
    if not (isinstance(delta, float) and 0.0 < delta < 1.0):
        raise ProtocolError(f"plan: {EXAMPLE_PRIVACY_KEY}.delta = {delta!r}: expected a number in (0, 1)")
    if target is not None and not (isinstance(target, (int, float)) and math.isfinite(target) and target > 0):
        raise ProtocolError(f"plan: {EXAMPLE_PRIVACY_KEY}.target_epsilon = {target!r}: expected a positive number")
    if accountant not in ("rdp", "pld"):
        raise ProtocolError(f"plan: {EXAMPLE_PRIVACY_KEY}.accountant = {accountant!r}: expected rdp or pld")
    return delta, None if target is None else float(target), accountant


OUT_OF_RUN = "this site is out of the run"  # how a cross-silo server's check-in reply to a failed site begins


@dataclass(frozen=True)
class TaskRef:
    """The task a plan runs, named (not shipped).

    Attributes:
        name: ``Task.task_name`` (a built-in: the model name, e.g. ``2nn``).
        version: ``Task.version``.
        digest: ``Task.digest()``: a device runs the plan only when its installed task has this digest.
        builtin: one of hamrah's reference tasks (built from the plan's ``ModelSpec``; no digest check).
        schema: the training records' schema as JSON (``Schema.to_json``), which a device's Example
            Store must hold; None when the task's data is not a table of named fields.
    """

    name: str
    version: str
    digest: str
    builtin: bool = False
    schema: str | None = None

    def describe(self) -> str:
        return f"task {self.name!r} (digest {self.digest})"


@dataclass(frozen=True)
class Plan:
    """One task's plan.

    Attributes:
        kind: "train" (local training, report the update) or "evaluate" (report loss and accuracy).
        round: the round this task belongs to.
        algorithm: the algorithm's name and hyperparameters, as ``hamrah.algorithms.build`` takes them.
        model: the built-in model to build, or None for a user task (built by the device's installed task).
        seed: the run's root seed; the device derives its local shuffles from it, the round and its key.
        ignore_index: the padding target of sequence data, or None.
        extra: what the round adds: the update pipeline (``"pipeline"``), a cross-silo site's settings
            (``"cross_silo"``: ``{"eval_fraction": f}``).
        task: the task the plan runs (None: a plan of a server before tasks, a built-in model).
        rounds: the run's total rounds, for a device's progress display (None: not said).
    """

    kind: str
    round: int
    algorithm: dict
    model: ModelSpec | None
    seed: int = 0
    ignore_index: int | None = None
    extra: dict = field(default_factory=dict)
    task: TaskRef | None = None
    rounds: int | None = None

    @property
    def user_task(self) -> bool:
        """True when the plan runs a user's task (no ModelSpec: the device must have the task installed)."""
        return self.model is None

    def to_json(self) -> bytes:
        d = asdict(self)
        d["version"] = 1 if self.model is not None else PLAN_VERSION
        return json.dumps(d, sort_keys=True).encode("utf-8")

    @staticmethod
    def from_json(data: bytes) -> Plan:
        """Parse and check a plan.

        Raises:
            ProtocolError: not JSON, an unknown version, or a field missing or of the wrong type.
        """
        try:
            d = json.loads(bytes(data).decode("utf-8"))
        except (ValueError, RecursionError) as e:  # not UTF-8 or JSON, a 5,000-digit number, 10^5 nested arrays
            why = "nested too deep" if isinstance(e, RecursionError) else str(e)[:200]
            raise ProtocolError(f"plan: not JSON this runtime reads ({why})") from None
        if not isinstance(d, dict):
            raise ProtocolError("plan: expected a JSON object")
        if d.get("version") not in VERSIONS:
            raise ProtocolError(
                f"plan: version {d.get('version')!r}, this runtime speaks versions {', '.join(map(str, VERSIONS))}"
            )
        try:
            m, t = d["model"], d.get("task")
            model = None
            if d["version"] == 1 or m is not None:
                model = ModelSpec(
                    str(m["name"]),
                    tuple(int(v) for v in m["input_shape"]),
                    int(m["num_classes"]),
                    bool(m["tokens"]),
                    int(m["hidden"]),
                )
            task = None
            if t is not None:
                schema = t.get("schema")
                task = TaskRef(
                    str(t["name"]),
                    str(t["version"]),
                    str(t["digest"]),
                    bool(t.get("builtin", False)),
                    None if schema is None else str(schema),
                )
            plan = Plan(
                str(d["kind"]),
                int(d["round"]),
                dict(d["algorithm"]),
                model,
                int(d["seed"]),
                None if d["ignore_index"] is None else int(d["ignore_index"]),
                dict(d.get("extra", {})),
                task,
                None if d.get("rounds") is None else int(d["rounds"]),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ProtocolError(f"plan: missing or malformed field ({e!r})") from None
        for name, value in (("round", plan.round), ("seed", plan.seed), ("rounds", plan.rounds or 0)):
            if not 0 <= value < 2**63:  # a negative seed failed later in numpy, naming no field
                raise ProtocolError(f"plan: {name} = {value}; expected an integer in [0, 2^63)")
        if plan.kind not in KINDS:
            raise ProtocolError(f"plan: kind {plan.kind!r}, expected one of {', '.join(KINDS)}")
        if model is None and (task is None or task.builtin):
            raise ProtocolError("plan: no model and no user task; expected a ModelSpec or a task name and digest")
        if model is not None and (
            model.name not in MODELS or not all(v > 0 for v in model.input_shape) or model.num_classes < 1
        ):
            raise ProtocolError(f"plan: model {model} is not one this runtime can build")
        for k, v in plan.algorithm.items():
            if isinstance(v, float) and not math.isfinite(v):
                raise ProtocolError(f"plan: algorithm.{k} = {v} is not finite")
        return plan
