"""The FL plan: what a device runs in a task, as versioned JSON (the weights travel separately)."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field

from hamrah.core.errors import ProtocolError
from hamrah.models import MODELS, ModelSpec

PLAN_VERSION = 1
KINDS = ("train", "evaluate")
CROSS_SILO_KEY = "cross_silo"  # in ``Plan.extra``: the task is a cross-silo site's, {"eval_fraction": f}
OUT_OF_RUN = "this site is out of the run"  # how a cross-silo server's check-in reply to a failed site begins


@dataclass(frozen=True)
class Plan:
    """One task's plan.

    Attributes:
        kind: "train" (local training, report the update) or "evaluate" (report loss and accuracy).
        round: the round this task belongs to.
        algorithm: the algorithm's name and hyperparameters, as ``hamrah.algorithms.build`` takes them.
        model: the model to build.
        seed: the run's root seed; the device derives its local shuffles from it, the round and its key.
        ignore_index: the padding target of sequence data, or None.
        extra: what the round adds: the update pipeline (``"pipeline"``), a cross-silo site's settings
            (``"cross_silo"``: ``{"eval_fraction": f}``).
    """

    kind: str
    round: int
    algorithm: dict
    model: ModelSpec
    seed: int = 0
    ignore_index: int | None = None
    extra: dict = field(default_factory=dict)

    def to_json(self) -> bytes:
        d = asdict(self)
        d["version"] = PLAN_VERSION
        return json.dumps(d, sort_keys=True).encode("utf-8")

    @staticmethod
    def from_json(data: bytes) -> Plan:
        """Parse and check a plan.

        Raises:
            ProtocolError: not JSON, an unknown version, or a field missing or of the wrong type.
        """
        try:
            d = json.loads(bytes(data).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ProtocolError(f"plan: not JSON ({e})") from None
        if not isinstance(d, dict):
            raise ProtocolError("plan: expected a JSON object")
        if d.get("version") != PLAN_VERSION:
            raise ProtocolError(f"plan: version {d.get('version')!r}, this runtime speaks version {PLAN_VERSION}")
        try:
            m = d["model"]
            model = ModelSpec(
                str(m["name"]),
                tuple(int(v) for v in m["input_shape"]),
                int(m["num_classes"]),
                bool(m["tokens"]),
                int(m["hidden"]),
            )
            plan = Plan(
                str(d["kind"]),
                int(d["round"]),
                dict(d["algorithm"]),
                model,
                int(d["seed"]),
                None if d["ignore_index"] is None else int(d["ignore_index"]),
                dict(d.get("extra", {})),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ProtocolError(f"plan: missing or malformed field ({e!r})") from None
        if plan.kind not in KINDS:
            raise ProtocolError(f"plan: kind {plan.kind!r}, expected one of {', '.join(KINDS)}")
        if model.name not in MODELS or not all(v > 0 for v in model.input_shape) or model.num_classes < 1:
            raise ProtocolError(f"plan: model {model} is not one this runtime can build")
        for k, v in plan.algorithm.items():
            if isinstance(v, float) and not math.isfinite(v):
                raise ProtocolError(f"plan: algorithm.{k} = {v} is not finite")
        return plan
