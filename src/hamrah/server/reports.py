"""Turn one training report's tensors into the Contribution the Aggregators fold in, and measure the
norm the influence bound (``hamrah.server.influence``) is applied to."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from hamrah.core.aggregate import Contribution, Statistic, pack, statistics_template
from hamrah.core.errors import ProtocolError
from hamrah.core.metrics import Weighted
from hamrah.privacy.mechanisms import l2_norm
from hamrah.server.events import Report
from hamrah.server.influence import InfluenceBound, check_metrics
from hamrah.server.rounds import RoundState, TaskInfo, client_id
from hamrah.transport.codec import check_update, decode_params, spec_of


def reported_loss(metrics: dict, weight: float) -> dict:
    """Return a report's training loss as the round's metric, or nothing when the device sent none (under
    DP-SGD, local or distributed DP a device keeps every metric of its examples to itself:
    :data:`hamrah.device.compute.PRIVATE_MODE_METRICS`), so the round records no made-up loss."""
    if "train_loss" not in metrics:
        return {}
    return {"train_loss": Weighted.of(float(metrics["train_loss"]), float(weight))}


def train_result(
    client: int,
    payload: bytes,
    weight: int,
    metrics: dict,
    spec: dict,
    pipeline=None,
    statistics: Sequence[Statistic] = (),
) -> tuple[Contribution, float | None]:
    """Check one training report and measure its norm (the Coordinator bounds it).

    Args:
        client: the client id the contribution carries.
        payload: the report's bytes: the algorithm's namespaced statistics as safetensors, or, when the
            round has a pipeline, the chain's wire bytes.
        weight: the weight the server trusts (``num_examples`` already capped).
        metrics: the report's checked metrics.
        spec: the statistics' tensor specs (names, shapes, dtypes).
        pipeline: the round's ``ServerPipeline`` or None.
        statistics: the algorithm's declared statistics (plain sums are packed with ``weight`` here).

    Returns:
        (the contribution, its L2 norm in float64; None for a homomorphic ciphertext: the server
        cannot see its norm, only its weight is bounded).

    Raises:
        ProtocolError: bytes that do not parse, or names, shapes, dtypes or values that do not match
            the statistics.
    """
    if pipeline is not None:
        result = pipeline.decode_result(client, payload, weight, metrics)
        if not all(v.is_floating_point() for v in result.stats.values()):
            return result, None
        return result, l2_norm(result.stats)
    tensors = decode_params(payload)
    check_update(tensors, spec)
    loss = reported_loss(metrics, weight)
    contribution = Contribution(client, pack(tensors, statistics, float(weight)), float(weight), loss)
    return contribution, l2_norm(contribution.stats)


class BoundedReports:
    """Mixed into :class:`hamrah.server.coordinator.Coordinator`: turn an accepted report into a
    bounded result and hand it to its Aggregator (uses ``current``, ``max_weight``, ``clip``,
    ``master``, ``spec``, ``pipeline`` and ``algorithm``)."""

    def weight_cap(self) -> int:
        """Return the most one report (or secure-aggregation JOIN) counts for: ``max_weight``, or 1 under
        DP-SGD (its devices say 1 example: their count is outside the epsilon)."""
        return 1 if self.algorithm.local_plan().example_dp is not None else self.max_weight

    def _weight(self, rs: RoundState, num_examples: int) -> int:
        weight = min(int(num_examples), self.weight_cap())
        rs.capped += weight < num_examples
        return weight

    def _decode_report(self, info: TaskInfo, report: Report) -> tuple[Contribution, float | None]:
        """Check a training report's metrics and payload; return (contribution, its norm)."""
        metrics = check_metrics(report.metrics)
        stats = self.algorithm.statistics
        if getattr(self, "_stats_spec", None) is None:
            self._stats_spec = spec_of(statistics_template(stats, self.params))
        return train_result(
            client_id(info.device),
            report.payload,
            self._weight(self.current, report.num_examples),
            metrics,
            self._stats_spec,
            self.pipeline,
            stats,
        )

    def _reports(self, rs: RoundState) -> int:
        return self.master.reports() + len(rs.held)

    def _fold(self, rs: RoundState, info: TaskInfo, result: Contribution, norm: float | None) -> None:
        """Note the report's norm and pass it on; hold it while the norm bound is not known yet (the
        first reports of a run: ``AdaptiveClip.min_norms``)."""
        if norm is not None and self.clip is not None:
            self.clip.observe(norm)
            rs.norms.append(norm)
        rs.held.append((info, result, norm))
        if self.clip is None or self.clip.ready():
            self._release(rs)

    def _release(self, rs: RoundState, closing: bool = False) -> None:
        """Clip the held reports to the current bound and hand them to their Aggregators."""
        clip = self.clip.clip() if self.clip is not None else None
        rs.clip = clip
        while rs.held:
            info, result, norm = rs.held.pop(0)  # popped first: a refusal below cannot fold one in twice
            if clip is not None and norm is not None and norm > clip:
                result = dataclasses.replace(result, stats=InfluenceBound(self.max_weight, clip).bound(result.stats)[0])
                rs.clipped += 1
            share = self.master.route(info.aggregator)
            if share is None and closing:  # every Aggregator failed: the report is lost with them
                self.master.lost += 1
                continue
            if share is None:
                raise ProtocolError("no aggregator is alive to take the update")
            share.add(result)


__all__ = ["BoundedReports", "reported_loss", "train_result"]
