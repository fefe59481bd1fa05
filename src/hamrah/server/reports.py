"""Turn one training report's tensors into the ClientResult the Aggregators fold in, and measure the
norm the influence bound (``hamrah.server.influence``) is applied to."""

from __future__ import annotations

import dataclasses

from hamrah.algorithms.base import ClientResult
from hamrah.core.errors import ProtocolError
from hamrah.core.params import Params
from hamrah.privacy.mechanisms import l2_norm
from hamrah.server.influence import InfluenceBound, check_metrics
from hamrah.server.rounds import RoundState, TaskInfo, client_id
from hamrah.transport.codec import (
    AUX_PREFIX,
    check_update,
    decode_metrics,
    decode_params,
)
from hamrah.transport.proto import fl_pb2 as pb


def train_result(client: int, tensors: Params, weight: int, metrics: dict, spec: dict,
                 pipeline=None) -> tuple[ClientResult, float | None]:
    """Check one training report and measure its delta's norm (the Coordinator bounds it).

    Args:
        client: the client id the result carries.
        tensors: the decoded safetensors payload (the delta, ``aux/`` tensors, or a pipeline payload).
        weight: the weight the server trusts (``num_examples`` already capped).
        metrics: the report's checked metrics.
        spec: the model's tensor specs (names, shapes, dtypes).
        pipeline: the round's ``ServerPipeline`` or None.

    Returns:
        (the result, its delta's L2 norm in float64; None for a homomorphic ciphertext: the server
        cannot see its norm, only its weight is bounded).

    Raises:
        ProtocolError: names, shapes, dtypes or values that do not match the model.
    """
    if pipeline is not None:
        result = pipeline.decode_result(client, tensors, weight, metrics)
        if not all(v.is_floating_point() for v in result.delta.values()):
            return result, None
        return result, l2_norm(result.delta)
    delta = {k: v for k, v in tensors.items() if not k.startswith(AUX_PREFIX)}
    aux = {k[len(AUX_PREFIX):]: v for k, v in tensors.items() if k.startswith(AUX_PREFIX)}
    check_update(delta, spec)
    unknown = sorted(set(aux) - set(spec))
    if unknown:
        raise ProtocolError(f"aux: unexpected tensors {unknown[:5]}; expected names of the model's parameters")
    check_update(aux, {k: spec[k] for k in aux}, what="aux")
    return ClientResult(client, delta, weight, metrics, aux=aux), l2_norm(delta)


class BoundedReports:
    """Mixed into :class:`hamrah.server.coordinator.Coordinator`: turn an accepted report into a
    bounded result and hand it to its Aggregator (uses ``current``, ``max_weight``, ``clip``,
    ``master``, ``spec`` and ``pipeline``)."""

    def _weight(self, rs: RoundState, num_examples: int) -> int:
        weight = min(int(num_examples), self.max_weight)
        rs.capped += weight < num_examples
        return weight

    def _decode_result(self, info: TaskInfo, header: pb.ReportHeader, payload: bytes) -> tuple[ClientResult, float]:
        metrics = check_metrics(decode_metrics(header.metrics))
        return train_result(client_id(info.device), decode_params(payload), self._weight(self.current, header.num_examples),
                            metrics, self.spec, self.pipeline)

    def _reports(self, rs: RoundState) -> int:
        return self.master.reports() + len(rs.held)

    def _fold(self, rs: RoundState, info: TaskInfo, result: ClientResult, norm: float | None) -> None:
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
                result = dataclasses.replace(result, delta=InfluenceBound(self.max_weight, clip).bound(result.delta)[0])
                rs.clipped += 1
            share = self.master.route(info.aggregator)
            if share is None and closing:  # every Aggregator failed: the report is lost with them
                self.master.lost += 1
                continue
            if share is None:
                raise ProtocolError("no aggregator is alive to take the update")
            share.add(result)


__all__ = ["BoundedReports", "train_result"]
