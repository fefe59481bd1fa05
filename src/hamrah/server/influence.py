"""Bounded influence: what one report may do to the global model, whatever it claims.

A device's report carries a delta and a ``num_examples`` it chose; FedAvg's weighted mean trusts both
(McMahan et al. 2017, Algorithm 1). The server bounds each instead:

- **the weight**: ``num_examples`` counts as at most ``max_weight`` (by default the largest client of
  the configured partition: honest devices are weighted exactly as in the paper);
- **the magnitude**: each delta is scaled to an L2 norm of at most ``clip`` over all its tensors
  together (norm bounding, Sun et al. 2019, *Can You Really Backdoor Federated Learning?*); the norm is
  taken in float64, so huge finite values (3e38 everywhere) are scaled, not turned into infinities.

With both on, one report moves a weighted-mean aggregate by at most ``max_weight / W * clip`` in L2,
where ``W`` is the round's total (capped) weight. :func:`check_finite` guards the last step: a round
whose new model is not finite is refused, never committed.

Values and pure functions only: no I/O, no clock.
"""

from __future__ import annotations

import collections
import logging
import math
import statistics
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from hamrah.core.errors import ConfigError, ProtocolError
from hamrah.core.params import Params
from hamrah.core.updates import first_non_finite
from hamrah.privacy.mechanisms import l2_norm
from hamrah.transport.plan import DP_EPSILON

log = logging.getLogger("hamrah.server")
DEFAULT_MAX_WEIGHT = 1000  # the weight cap when the server does not know the partition's client sizes
UNBOUNDED_WEIGHT = 10**9  # the protocol's largest num_examples (hamrah.server.rounds.MAX_EXAMPLES)


@dataclass(frozen=True)
class InfluenceBound:
    """The bound on one report's pull on the model.

    Attributes:
        max_weight: the most ``num_examples`` one report counts for (>= 1).
        clip: the largest L2 norm a delta keeps; None: no norm bound (the operator turned it off).
    """

    max_weight: int
    clip: float | None

    def __post_init__(self) -> None:
        if not isinstance(self.max_weight, int) or self.max_weight < 1:
            raise ConfigError(f"influence bound: max_weight = {self.max_weight!r}: expected an integer >= 1")
        if self.clip is not None and not (self.clip >= 0 and math.isfinite(self.clip)):
            raise ConfigError(f"influence bound: clip = {self.clip!r}: expected a finite number >= 0")

    def weight(self, num_examples: int) -> int:
        """Return the weight the server gives a report claiming ``num_examples`` (capped at ``max_weight``)."""
        return min(int(num_examples), self.max_weight)

    def bound(self, delta: Mapping[str, torch.Tensor]) -> tuple[Params, float]:
        """Scale ``delta`` to L2 norm at most ``clip``.

        Args:
            delta: one report's model change, name -> floating tensor (finite values).

        Returns:
            (the bounded delta in its own dtypes, its float64 norm before bounding). A delta within
            the bound, or any delta when ``clip`` is None, is returned unchanged.
        """
        norm = l2_norm(delta)
        if self.clip is None or norm <= self.clip:
            return dict(delta), norm
        scale = self.clip / norm  # norm > clip >= 0
        return {k: v * scale if v.is_floating_point() else v for k, v in delta.items()}, norm  # scale < 1


@dataclass
class AdaptiveClip:
    """The norm bound each report is clipped to: ``multiplier`` times the median (low) of the norms of
    the last ``window`` accepted reports, or a fixed bound.

    The median is robust: as long as most recent reports are honest, a minority cannot move it past
    the honest norms, so the bound follows the honest updates' scale as training converges (adaptive
    clipping at a quantile, Andrew et al. 2021, *Differentially Private Learning with Adaptive
    Clipping*, here computed by the server, which sees each norm). Until ``min_norms`` norms are known
    (the first reports of a run) the Coordinator holds reports back instead of folding them in.

    Attributes:
        multiplier: >= 1; one report pulls at most as hard as ``multiplier`` median reports.
        fixed: the operator's ``clip_norm``, or None (adaptive).
        window: how many recent norms the median is taken over.
        min_norms: norms needed before the adaptive bound is trusted.
    """

    multiplier: float
    fixed: float | None = None
    window: int = 64
    min_norms: int = 3
    norms: collections.deque = field(default_factory=collections.deque)

    def observe(self, norm: float) -> None:
        """Add one accepted report's norm (before bounding)."""
        self.norms.append(norm)
        while len(self.norms) > self.window:
            self.norms.popleft()

    def ready(self) -> bool:
        return self.fixed is not None or len(self.norms) >= self.min_norms

    def clip(self) -> float | None:
        """Return the current bound (None: no norm known yet). A median of 0 gives 0: deltas are zeroed."""
        if self.fixed is not None:
            return self.fixed
        if not self.norms:
            return None
        clip = self.multiplier * statistics.median_low(self.norms)
        return clip if math.isfinite(clip) else None

    def seed(self, clip) -> None:
        """Resume from a committed round's bound: as if ``min_norms`` reports of that median were seen."""
        if self.fixed is None and isinstance(clip, float) and clip > 0 and math.isfinite(clip):
            for _ in range(self.min_norms):
                self.observe(clip / self.multiplier)


def influence_bound(cfg, last: list[dict] = ()) -> tuple[int, AdaptiveClip | None]:
    """Return the weight cap and the norm bound a server config asks for, and log them (a warning when
    they are off).

    Args:
        cfg: a ``hamrah.server.config.ServerConfig`` (``bounded_influence``, ``max_example_weight``,
            ``clip_norm``, ``clip_multiplier``, ``clip_window``).
        last: the last committed round's record, if any: a resumed server starts from its ``clip_norm``.

    Returns:
        (the most examples a report counts for, the clip rule or None when bounds are off).
    """
    if not cfg.bounded_influence:
        log.warning(
            "server.bounded_influence = false: num_examples up to %d is trusted as each report's weight "
            "and deltas are not norm-bounded; one device can move the model at will",
            UNBOUNDED_WEIGHT,
        )
        return UNBOUNDED_WEIGHT, None
    clip = AdaptiveClip(cfg.clip_multiplier, cfg.clip_norm or None, cfg.clip_window)
    clip.seed(last[0].get("clip_norm") if last else None)
    weight = cfg.max_example_weight or DEFAULT_MAX_WEIGHT
    log.info(
        "bounded influence: a report counts for at most %d examples; deltas are clipped to %s",
        weight,
        f"L2 norm {clip.fixed:g}"
        if clip.fixed
        else f"{cfg.clip_multiplier:g}x the median norm of the last {cfg.clip_window} reports",
    )
    return weight, clip


def check_finite(params: Mapping[str, torch.Tensor], what: str) -> None:
    """Refuse a model or aggregate that holds NaN or infinite values.

    Raises:
        ProtocolError: naming the first tensor that is not finite.
    """
    name = first_non_finite(params)
    if name is not None:
        raise ProtocolError(f"{what}: {name} holds NaN or infinite values")


# Evaluate-task and training metrics: the range each known metric must fall in (inclusive).
# A loss a device reports enters a weighted sum over the round's reports (weights up to 1e9): bounded so
# that sum stays finite (a reported 1e308 made the round's loss infinite in the records).
MAX_LOSS = 1e200
METRIC_RANGES = {
    "accuracy": (0.0, 1.0),
    "loss": (0.0, MAX_LOSS),
    "train_loss": (0.0, MAX_LOSS),
    "eval_accuracy": (0.0, 1.0),  # cross-silo: the round's global model on the site's held-out examples
    "eval_loss": (0.0, MAX_LOSS),
    "eval_examples": (0.0, math.inf),
    DP_EPSILON: (0.0, math.inf),  # DP-SGD: the example-level epsilon a device's store has spent (as it says)
    "held_examples": (1.0, math.inf),  # personalized runs: models scored on the held-out examples
    "local_loss": (0.0, MAX_LOSS),
    "local_accuracy": (0.0, 1.0),
    "personal_loss": (0.0, MAX_LOSS),
    "personal_accuracy": (0.0, 1.0),
    "duration_s": (0.0, 1e7),  # the device's training time (the round's training_s)
}
SITE_EVAL = ("eval_examples", "eval_loss", "eval_accuracy")
MAX_METRICS = 32  # most metrics one report may carry


def check_metrics(metrics: Mapping[str, float], required: tuple[str, ...] = ()) -> dict[str, float]:
    """Check a report's metrics: at most ``MAX_METRICS``, every known one in its range, ``required`` present.

    Args:
        metrics: name -> finite float (already parsed by ``hamrah.transport.codec.decode_metrics``).
        required: names that must be present.

    Returns:
        ``metrics`` as a plain dict.

    Raises:
        ProtocolError: naming the metric, its value and the range expected.
    """
    if len(metrics) > MAX_METRICS:
        raise ProtocolError(f"metrics: {len(metrics)} values, expected at most {MAX_METRICS}")
    missing = [k for k in required if k not in metrics]
    if missing:
        raise ProtocolError(f"metrics: missing {missing}; expected {list(required)}")
    for name, value in metrics.items():
        low, high = METRIC_RANGES.get(name, (-math.inf, math.inf))
        if not (math.isfinite(value) and low <= value <= high):
            raise ProtocolError(f"metrics: {name} = {value!r}, expected a finite number in [{low}, {high}]")
    return dict(metrics)


__all__ = [
    "DEFAULT_MAX_WEIGHT",
    "METRIC_RANGES",
    "UNBOUNDED_WEIGHT",
    "AdaptiveClip",
    "InfluenceBound",
    "check_finite",
    "check_metrics",
    "influence_bound",
]


def site_eval_of(
    metrics: Mapping[str, float], task_metrics: Mapping[str, float] | None, user_task: bool, max_weight: int
) -> tuple[int, dict] | None:
    """Cross-silo: a training report's score of the round's global model on the site's held-out
    examples, as ``(weight, {"loss", "accuracy", "task"})`` with the weight capped at ``max_weight``;
    None when it carries none.

    Raises:
        ProtocolError: some of ``eval_examples``, ``eval_loss``, ``eval_accuracy`` but not all (a user's
            task may leave out the accuracy), or a value out of range.
    """
    present = [k for k in SITE_EVAL if k in metrics]
    if not present:
        return None
    needed = SITE_EVAL[:2] if user_task else SITE_EVAL
    if any(k not in present for k in needed):
        raise ProtocolError(f"metrics: {present} without the rest of {list(needed)}")
    m = check_metrics({k: metrics[k] for k in present})
    weight = min(int(m["eval_examples"]), max_weight)
    scored = {"loss": m["eval_loss"]}
    if "eval_accuracy" in m:
        scored["accuracy"] = m["eval_accuracy"]
    if task_metrics:
        scored["task"] = dict(task_metrics)
    return (weight, scored) if weight >= 1 else None
