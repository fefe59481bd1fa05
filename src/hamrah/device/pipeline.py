"""The client half of the update pipeline on a device (see :mod:`hamrah.server.pipeline`).

When the FL plan's ``extra`` carries ``"pipeline"``, the device rebuilds the chain from it, encodes its
update (clip, local noise, codec) and sends the wire bytes as one uint8 tensor ``"pipeline/payload"``.
Randomness (stochastic rounding, local DP noise) comes from OS entropy, not from the run's seed, so
nobody who knows the config can subtract it. Per-client stage state (error feedback) is kept in
memory by the runtime for the life of the process.
"""

from __future__ import annotations

import json

import numpy as np
import torch

from hamrah.core.params import Params
from hamrah.core.pipeline import ClientContext
from hamrah.privacy.chains import PipelineSpec

PLAN_KEY, PAYLOAD_KEY = "pipeline", "pipeline/payload"


def uses_pipeline(extra: dict) -> bool:
    """Return True when a plan's ``extra`` asks for the pipeline."""
    return PLAN_KEY in extra


def encode_update(extra: dict, update: Params, client_key: int, round_idx: int, states: dict) -> Params:
    """Return the tensors to report: the chain's wire payload as one uint8 tensor.

    Args:
        extra: the plan's ``extra`` dict. update: the delta from local training.
        client_key: this device's client id. round_idx: the task's round.
        states: this runtime's chain state, kept across tasks (updated in place).

    Raises:
        ConfigError: the plan's pipeline is malformed or cannot work.
    """
    spec = PipelineSpec.from_dict(extra[PLAN_KEY])
    chain = spec.chain()
    key = json.dumps(extra[PLAN_KEY], sort_keys=True)
    state = states.get(key) or chain.init_client(update)
    ctx = ClientContext(client_key, round_idx, np.random.default_rng())
    payload, states[key] = chain.encode(update, state, ctx, chain.init_server(update))
    data = payload.to_bytes()
    return {PAYLOAD_KEY: torch.frombuffer(bytearray(data), dtype=torch.uint8)}


__all__ = ["PAYLOAD_KEY", "PLAN_KEY", "encode_update", "uses_pipeline"]
