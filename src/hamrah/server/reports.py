"""Turn one training report's tensors into the ClientResult the Aggregators fold in, within the
influence bound (``hamrah.server.influence``)."""

from __future__ import annotations

import dataclasses

from hamrah.algorithms.base import ClientResult
from hamrah.core.errors import ProtocolError
from hamrah.core.params import Params
from hamrah.server.influence import InfluenceBound
from hamrah.transport.codec import AUX_PREFIX, check_update


def train_result(client: int, tensors: Params, weight: int, metrics: dict, spec: dict, bound: InfluenceBound,
                 pipeline=None) -> tuple[ClientResult, float | None]:
    """Check and bound one training report.

    Args:
        client: the client id the result carries.
        tensors: the decoded safetensors payload (the delta, ``aux/`` tensors, or a pipeline payload).
        weight: the weight the server trusts (``num_examples`` already capped).
        metrics: the report's checked metrics.
        spec: the model's tensor specs (names, shapes, dtypes).
        bound: the influence bound; the delta is scaled to its norm bound.
        pipeline: the round's ``ServerPipeline`` or None.

    Returns:
        (the result, its delta's L2 norm before bounding; None when unseen). A homomorphic ciphertext is returned as the
        pipeline decoded it: the server cannot see its norm, only its weight is bounded.

    Raises:
        ProtocolError: names, shapes, dtypes or values that do not match the model.
    """
    if pipeline is not None:
        result = pipeline.decode_result(client, tensors, weight, metrics)
        if not all(v.is_floating_point() for v in result.delta.values()):
            return result, None
        delta, norm = bound.bound(result.delta)
        return dataclasses.replace(result, delta=delta), norm
    delta = {k: v for k, v in tensors.items() if not k.startswith(AUX_PREFIX)}
    aux = {k[len(AUX_PREFIX):]: v for k, v in tensors.items() if k.startswith(AUX_PREFIX)}
    check_update(delta, spec)
    unknown = sorted(set(aux) - set(spec))
    if unknown:
        raise ProtocolError(f"aux: unexpected tensors {unknown[:5]}; expected names of the model's parameters")
    check_update(aux, {k: spec[k] for k in aux}, what="aux")
    delta, norm = bound.bound(delta)
    return ClientResult(client, delta, weight, metrics, aux=aux), norm


__all__ = ["train_result"]
