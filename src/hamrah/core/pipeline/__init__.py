"""The client-update pipeline: a chain of stages, each with a client half and a server half.

After local training each client's update (``Params``: name -> tensor) flows through a :class:`Chain`
of stages (clipping, noise, compression, secure aggregation). The design follows optax's
``GradientTransformation(init, update)`` + ``chain`` and pfl's ``Postprocessor``
(``postprocess_one_user`` / ``postprocess_server``), with explicit state and exact wire bytes.

How to write a stage (subclass :class:`BaseStage`, a frozen dataclass, and override what you need):

- ``traits`` (a ``ClassVar`` or a property): a :class:`StageTraits` declaring what the stage is
  (``kind``), whether its payload can be summed in a ring, whether its server half needs each client's
  update, where it adds noise. :class:`Chain` checks these when built and refuses impossible orders.
- ``init_state(template)``: the per-client state (e.g. an error-feedback residual) or ``None``. The
  driver keeps one per client and stage across rounds (simulator: in memory; device: on disk).
- ``init_server(template)``: the server state (e.g. an adaptive clipping norm) or ``None``. Clients
  see it read-only as ``ctx.server_state`` (it is broadcast with the model: keep it public).
- ``encode(update, state, ctx) -> (payload, new_state)``: the client half. Randomness comes only from
  ``ctx.rng`` (a per-client, per-round numpy Generator) or ``ctx.round_seed`` (shared by the round's
  clients); ``ctx.upstream`` is the previous stage's payload (a secure-sum stage reads ring integers
  from it, see :class:`RingCodes`). Return a payload with ``nbytes == len(payload.to_bytes())``.
- ``decode(payload) -> Params``: the server's reconstruction of one payload. A client applies it too,
  to feed the next stage: only the LAST client-side stage's payload goes on the wire.
- ``read(data, spec) -> payload``: parse wire bytes; malformed bytes raise ``ProtocolError``.
- ``server(aggregate, state, ctx) -> (aggregate, new_state)``: the server half on the aggregate (central
  noise, norm updates), run in reverse chain order after aggregation.
- A stage of kind ``"secure_sum"`` (secure aggregation, HE) also implements
  ``aggregate(payloads, ctx) -> Params`` returning the SUM of its clients' inputs; the server never
  decodes a single payload of such a chain. A multi-message protocol implements
  ``secure_round(payloads, ctx) -> (sum, bytes sent per client, bytes received per client)`` instead,
  and the round's byte report carries those protocol bytes. In that mode each client's update is scaled by
  ``weight * m`` before the first stage (1 for equal weights), and the chain divides the sum by m.
- A stage with ``traits.needs_per_client_view`` (robust aggregation) implements
  ``combine(updates, weights, ctx) -> Params``, which replaces the weighted mean of decoded updates.
- A stage may implement ``bound_decoded(update, server_state) -> Params``: the server applies it to
  each client's decoded update before aggregation (central DP re-clips there, so a lossy codec cannot
  raise a client's contribution above the clip norm the noise is calibrated to). Under a secure sum
  the server never sees one client's update: such a stage must bound the contribution on the client.
- Auxiliary sums: a stage may add entries to the update under keys starting with ``"<stage name>:"``
  (e.g. adaptive clipping's was-clipped bit, Andrew et al. 2021); they travel through later stages and
  aggregation like any tensor (summed securely under secure aggregation) and its server half pops them.

Example:
    >>> import torch, numpy as np
    >>> chain = Chain([Identity()])
    >>> ups = {0: {"w": torch.ones(3)}, 1: {"w": torch.zeros(3)}}
    >>> out = process_round(chain, ups, {0: 1.0, 1: 3.0}, {}, {k: np.random.default_rng(k) for k in ups})
    >>> out.aggregate["w"].tolist(), out.bytes.up[0]
    ([0.25, 0.25, 0.25], 30)
"""

from __future__ import annotations

from hamrah.core.checks import check_chain, check_statistics
from hamrah.core.pipeline.chain import Chain
from hamrah.core.pipeline.rounds import RoundBytes, RoundOutput, process_round, wire_spec
from hamrah.core.pipeline.stage import KINDS, BaseStage, ClientContext, Identity, ServerContext, Stage, StageTraits
from hamrah.core.pipeline.stage import NOISE_WHERE as NOISE_WHERE  # importable here as before (not in __all__)
from hamrah.core.pipeline.stage import RingCodes as RingCodes  # importable here as before (not in __all__)
from hamrah.core.wire import DensePayload, Payload, Spec, WireReader, WireWriter, header_nbytes, spec_of

__all__ = [
    "KINDS",
    "BaseStage",
    "Chain",
    "ClientContext",
    "DensePayload",
    "Identity",
    "Payload",
    "RoundBytes",
    "RoundOutput",
    "ServerContext",
    "Spec",
    "Stage",
    "StageTraits",
    "WireReader",
    "WireWriter",
    "check_chain",
    "check_statistics",
    "header_nbytes",
    "process_round",
    "spec_of",
    "wire_spec",
]
