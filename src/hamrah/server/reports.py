"""Turn one training report's tensors into the ClientResult the Aggregators fold in, and measure the
norm the influence bound (``hamrah.server.influence``) is applied to."""

from __future__ import annotations

from hamrah.algorithms.base import ClientResult
from hamrah.core.errors import ProtocolError
from hamrah.core.params import Params
from hamrah.server.influence import l2_norm64
from hamrah.transport.codec import AUX_PREFIX, check_update


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
        return result, l2_norm64(result.delta)
    delta = {k: v for k, v in tensors.items() if not k.startswith(AUX_PREFIX)}
    aux = {k[len(AUX_PREFIX):]: v for k, v in tensors.items() if k.startswith(AUX_PREFIX)}
    check_update(delta, spec)
    unknown = sorted(set(aux) - set(spec))
    if unknown:
        raise ProtocolError(f"aux: unexpected tensors {unknown[:5]}; expected names of the model's parameters")
    check_update(aux, {k: spec[k] for k in aux}, what="aux")
    return ClientResult(client, delta, weight, metrics, aux=aux), l2_norm64(delta)


__all__ = ["train_result"]
