"""The client half of the update pipeline on a device (see :mod:`hamrah.server.pipeline`).

When the FL plan's ``extra`` carries ``"pipeline"``, the device rebuilds the chain from it, encodes its
update (clip, local noise, codec, or encryption under the public key the spec carries) and reports the
chain's wire bytes as they are: the report's payload is one envelope (the chain's), not a safetensors
file around it. The server state clients read (adaptive
clipping's current norm) comes with each task in ``extra["pipeline/server_state"]``; without it the
chain's initial state is used. Randomness (stochastic rounding, local DP noise) comes from OS entropy,
not from the run's seed, so nobody who knows the config can subtract it; encryption nonces come from the
OS CSPRNG. Per-client stage state (error feedback) is kept in memory by the runtime for the life of the
process.
"""

from __future__ import annotations

import functools
import hashlib
import json

import numpy as np

from hamrah.core.errors import ConfigError
from hamrah.core.params import Params
from hamrah.core.pipeline import Chain, ClientContext, Payload
from hamrah.pipeline import PipelineSpec
from hamrah.pipeline.spec import PLAN_KEY, STATE_KEY
from hamrah.privacy.server_state import server_state_from_dict


def uses_pipeline(extra: dict) -> bool:
    """Return True when a plan's ``extra`` asks for the pipeline."""
    return PLAN_KEY in extra


@functools.lru_cache(maxsize=8)
def _parsed(text: str) -> tuple[PipelineSpec, Chain]:
    spec = PipelineSpec.from_json(json.loads(text))  # parsed and its chain checked once
    return spec, spec.chain()


def plan_pipeline(extra: dict) -> tuple[PipelineSpec, Chain]:
    """Return the plan's pipeline spec and chain, parsed once per distinct plan (not on every use in a task).

    Raises:
        ConfigError: the plan's pipeline is malformed or cannot work.
    """
    return _parsed(json.dumps(extra[PLAN_KEY], sort_keys=True))


def encode_payload(extra: dict, update: Params, client_key: int, round_idx: int, states: dict) -> tuple[Chain, Payload]:
    """Run the plan's chain over ``update``; return the chain and its wire payload.

    Args:
        extra: the plan's ``extra`` dict. update: the delta from local training.
        client_key: this device's client id. round_idx: the task's round.
        states: this runtime's chain state, kept across tasks (updated in place).

    Raises:
        ConfigError: the plan's pipeline or server state is malformed or cannot work.
    """
    _, chain = plan_pipeline(extra)
    broadcast = extra.get(STATE_KEY)
    if broadcast is not None and not isinstance(broadcast, dict):
        raise ConfigError(f"plan: {STATE_KEY} is {type(broadcast).__name__}; expected an object of stage states")
    key = hashlib.sha256(json.dumps(extra[PLAN_KEY], sort_keys=True).encode()).hexdigest()
    state = states.get(key) or chain.init_client(update)
    ctx = ClientContext(client_key, round_idx, np.random.default_rng())
    payload, states[key] = chain.encode(update, state, ctx, server_state_from_dict(chain, update, broadcast))
    return chain, payload


def encode_update(extra: dict, update: Params, client_key: int, round_idx: int, states: dict) -> bytes:
    """Return the report's payload: the chain's wire bytes (:func:`encode_payload`)."""
    return encode_payload(extra, update, client_key, round_idx, states)[1].to_bytes()


__all__ = ["PLAN_KEY", "STATE_KEY", "encode_payload", "encode_update", "plan_pipeline", "uses_pipeline"]
