"""Secure aggregation: SecAgg (Bonawitz et al. 2017, CCS) and SecAgg+ (Bell et al. 2020, CCS),
semi-honest or, with identity keys, actively secure against a malicious server (``hamrah.secagg.active``).

Client and server are state machines without I/O (``SecAggClient``, ``SecAggServer``); their messages
are frozen dataclasses with a versioned binary codec; ``run_secure_aggregation`` drives a round in
memory. See ``docs/secagg.md``.

Example:
    >>> import numpy as np
    >>> from hamrah.secagg import SecAggConfig, run_secure_aggregation
    >>> xs = [np.full(4, 0.25), np.full(4, -0.5), np.full(4, 0.75)]
    >>> run = run_secure_aggregation(xs, SecAggConfig(num_clients=3, vector_length=4), seed=0)
    >>> np.round(run.sum, 3).tolist()
    [0.5, 0.5, 0.5, 0.5]
"""

from hamrah.secagg.active import (
    ACTIVE_STAGES,
    ActiveSecAggClient,
    ActiveSecAggServer,
    identity_public_key,
    resolve_consistency_threshold,
    simulated_identities,
)
from hamrah.secagg.active_messages import (
    ConsistencyBroadcast,
    ConsistencyRequest,
    ConsistencySignature,
    SignedAdvertiseKeys,
    SignedKeysBroadcast,
    SignedPeerKeys,
)
from hamrah.secagg.client import SecAggClient
from hamrah.secagg.config import SecAggConfig, secaggplus_degree
from hamrah.secagg.crypto import DeterministicRandom
from hamrah.secagg.driver import SecAggRun, random_dropouts, run_secure_aggregation
from hamrah.secagg.graph import masking_graph
from hamrah.secagg.messages import (
    AdvertiseKeys,
    KeysBroadcast,
    MaskedInput,
    PeerKeys,
    ShareKeys,
    SharesBroadcast,
    UnmaskRequest,
    UnmaskShares,
    decode,
)
from hamrah.secagg.params import ParamsLayout, flatten_params, secure_weighted_mean, unflatten_params, wire_layout
from hamrah.secagg.server import STAGES, AggregateResult, SecAggServer

__all__ = [
    "ACTIVE_STAGES",
    "STAGES",
    "ActiveSecAggClient",
    "ActiveSecAggServer",
    "AdvertiseKeys",
    "AggregateResult",
    "ConsistencyBroadcast",
    "ConsistencyRequest",
    "ConsistencySignature",
    "DeterministicRandom",
    "KeysBroadcast",
    "MaskedInput",
    "ParamsLayout",
    "PeerKeys",
    "SecAggClient",
    "SecAggConfig",
    "SecAggRun",
    "SecAggServer",
    "ShareKeys",
    "SharesBroadcast",
    "SignedAdvertiseKeys",
    "SignedKeysBroadcast",
    "SignedPeerKeys",
    "UnmaskRequest",
    "UnmaskShares",
    "decode",
    "flatten_params",
    "identity_public_key",
    "masking_graph",
    "random_dropouts",
    "resolve_consistency_threshold",
    "run_secure_aggregation",
    "secaggplus_degree",
    "secure_weighted_mean",
    "simulated_identities",
    "unflatten_params",
    "wire_layout",
]
