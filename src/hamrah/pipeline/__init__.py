"""The client-update pipeline of a run, assembled from plain settings above the building blocks.

- :class:`PipelineSpec` / :func:`resolve_pipeline`: the typed, JSON-ready spec of a run's chain
  (codec, DP, secure aggregation, HE; each section a frozen dataclass of :mod:`hamrah.pipeline.sections`),
  built through a lazy stage registry (:data:`STAGES`): a run without DP or HE imports neither
  dp_accounting nor tenseal nor phe.
- :class:`PipelineRun`: a driver's state across rounds (client and server stage states, accountant).
- :mod:`hamrah.pipeline.distributed` (distributed DP: discrete Gaussian noise summed under SecAgg; its
  accountant in :mod:`hamrah.pipeline.distributed_accounting`) and :mod:`hamrah.pipeline.sensitivity`
  (a secure sum's rounding bound), which combine DP with secure sums.

The stages themselves (:mod:`hamrah.core.pipeline`'s protocol) live in the leaves: ``hamrah.compression``,
``hamrah.privacy``, ``hamrah.secagg``, ``hamrah.he``.
"""

from hamrah.pipeline.registry import STAGES, stage_factory
from hamrah.pipeline.run import PipelineRun
from hamrah.pipeline.sections import (
    CODECS,
    Codec,
    HalfCodec,
    MaskCodec,
    QuantizeCodec,
    SecureSpec,
    SignCodec,
    TopKCodec,
    codec_stage,
    compression_spec,
    dp_config,
    dp_settings,
    secure_spec,
)
from hamrah.pipeline.spec import PipelineSpec, resolve_pipeline

__all__ = [
    "CODECS",
    "STAGES",
    "Codec",
    "HalfCodec",
    "MaskCodec",
    "PipelineRun",
    "PipelineSpec",
    "QuantizeCodec",
    "SecureSpec",
    "SignCodec",
    "TopKCodec",
    "codec_stage",
    "compression_spec",
    "dp_config",
    "dp_settings",
    "resolve_pipeline",
    "secure_spec",
    "stage_factory",
]
