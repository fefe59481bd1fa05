"""The device's half of secure aggregation over gRPC (the server's is :mod:`hamrah.server.secure`).

After training, a device whose plan's pipeline has a SecureAggregation stage opens one
SecureAggregation stream and walks JOIN, ADVERTISE_KEYS, SHARE_KEYS, MASKED_INPUT and UNMASKING with
:class:`hamrah.secagg.SecAggClient` (keys from ``os.urandom``). Its input is its update weighted by
``n_k / W`` (1 under DP), run through the pipeline's client stages before the secure sum (clipping,
local noise, a codec), flattened in :func:`hamrah.secagg.wire_layout` order. The server never sees
the update itself, only the masked vector.
"""

from __future__ import annotations

import asyncio
import json

import numpy as np
import torch

from hamrah.core.errors import ProtocolError
from hamrah.core.params import Params
from hamrah.core.pipeline import spec_of
from hamrah.device.pipeline import PLAN_KEY, encode_payload
from hamrah.privacy.chains import PipelineSpec
from hamrah.privacy.distributed import DistributedDiscreteGaussian, RingPayload
from hamrah.secagg import SecAggClient, decode, wire_layout
from hamrah.secagg.stage import SecureAggregation
from hamrah.transport.codec import chunks, join_chunks
from hamrah.transport.proto import fl_pb2 as pb

SECAGG_STAGES = ("advertise_keys", "share_keys", "masked_input", "unmasking")
MAX_MESSAGE = 1 << 30


def secure_stage(extra: dict) -> SecureAggregation | DistributedDiscreteGaussian | None:
    """Return the plan's secure-sum stage (SecAgg, or distributed DP's DDG), or None when its pipeline has none.

    Raises:
        ConfigError: the plan's pipeline is malformed.
    """
    if PLAN_KEY not in extra:
        return None
    chain = PipelineSpec.from_dict(extra[PLAN_KEY]).chain()
    stage = None if chain.secure_sum is None else chain.stages[chain.secure_sum]
    return stage if isinstance(stage, (SecureAggregation, DistributedDiscreteGaussian)) else None


def secure_input(extra: dict, update: Params, weight: float, client_key: int, round_idx: int,
                 states: dict) -> np.ndarray:
    """Return this device's input to the secure sum: ``weight * update`` through the client stages, flattened
    (under distributed DP: the DDG stage's ring vector, clipped, rotated, rounded and noised on this device).

    Args:
        states: the runtime's pipeline state across tasks (updated in place), as for plain reports.
    """
    # names sorted (wire_layout's order): the DDG stage flattens in key order and only the server unflattens
    scaled = {k: update[k].to(torch.float32) * weight for k in sorted(update)}
    chain, payload = encode_payload(extra, scaled, client_key, round_idx, states)
    if isinstance(payload, RingPayload):  # distributed DP: clipped, rotated, rounded, noised ring elements
        return payload.values
    decoded = chain.wire_stage().decode(payload)
    layout = wire_layout(spec_of(decoded))
    return np.concatenate([decoded[n].detach().double().reshape(-1).numpy() for n in layout.names])


class SecureSession:
    """One device's secure-aggregation stream for one task.

    ``drop_before``: a protocol stage name; the device vanishes (closes the stream) before sending that
    stage's message (simulated drop-out, for fleets and tests).
    """

    def __init__(self, call, task: pb.Task, drop_before: str | None = None):
        self.call, self.task, self.drop_before = call, task, drop_before

    async def run(self, stage: SecureAggregation, update: Params, num_examples: int, metrics: dict,
                  extra: dict, equal_weights: bool, client_key: int, states: dict) -> float | None:
        """Run the protocol; return the server's reconnect delay, or None if this device dropped out."""
        join, _ = await self._send(pb.JOIN, b"", num_examples=num_examples, metrics=json.dumps(metrics).encode())
        weight = 1.0 if equal_weights else num_examples / join.weight_scale
        vector = secure_input(extra, update, weight, client_key, self.task.round, states)
        config = stage.config(int(join.num_clients), int(vector.size))
        client = SecAggClient(int(join.client_index), config, round_id=self.task.round)
        reply = None
        for name in SECAGG_STAGES:
            if name == self.drop_before:
                self.call.cancel()
                return None
            if name == "advertise_keys":
                message = client.advertise_keys()
            elif name == "masked_input":
                message = await asyncio.to_thread(client.masked_input, reply, vector)
            else:
                message = getattr(client, {"share_keys": "share_keys", "unmasking": "unmask"}[name])(reply)
            header, data = await self._send(getattr(pb, name.upper()), message.to_bytes())
            reply = decode(data) if data else None
        await self.call.done_writing()
        return header.reconnect_after_s

    async def _send(self, stage: int, data: bytes, **fields) -> tuple[pb.SecAggHeader, bytes]:
        header = pb.SecAggHeader(task_id=self.task.task_id, round=self.task.round, stage=stage,
                                 message_bytes=len(data), **fields)
        await self.call.write(pb.SecAggPart(header=header))
        for piece in chunks(data) if data else ():
            await self.call.write(pb.SecAggPart(chunk=pb.Chunk(data=piece)))
        first = await self.call.read()
        if not isinstance(first, pb.SecAggPart) or not first.HasField("header"):
            raise ProtocolError("secure aggregation: the server's reply did not start with a header")
        reply = first.header
        parts = []
        while sum(map(len, parts)) < reply.message_bytes:
            part = await self.call.read()
            if not isinstance(part, pb.SecAggPart) or not part.HasField("chunk"):
                raise ProtocolError("secure aggregation: the server's reply ended early")
            parts.append(part.chunk.data)
        return reply, join_chunks(parts, reply.message_bytes, MAX_MESSAGE, what="secure aggregation reply")


__all__ = ["SecureSession", "secure_input", "secure_stage"]
