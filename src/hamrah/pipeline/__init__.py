"""The client-update pipeline of a run, assembled from plain settings above the building blocks.

- :class:`PipelineSpec` / :func:`resolve_pipeline`: the typed, JSON-ready spec of a run's chain
  (codec, DP, secure aggregation, HE), built through a lazy stage registry (:data:`STAGES`): a run
  without DP or HE imports neither dp_accounting nor tenseal nor phe.
- :class:`PipelineRun`: a driver's state across rounds (client and server stage states, accountant).
- :mod:`hamrah.pipeline.distributed` (distributed DP: discrete Gaussian noise summed under SecAgg) and
  :mod:`hamrah.pipeline.sensitivity` (a secure sum's rounding bound), which combine DP with secure sums.

The stages themselves (:mod:`hamrah.core.pipeline`'s protocol) live in the leaves: ``hamrah.compression``,
``hamrah.privacy``, ``hamrah.secagg``, ``hamrah.he``.
"""

from hamrah.pipeline.run import PipelineRun
from hamrah.pipeline.spec import (
    CODECS,
    STAGES,
    PipelineSpec,
    codec_stage,
    dp_config,
    dp_settings,
    resolve_pipeline,
    stage_factory,
)

__all__ = [
    "CODECS",
    "STAGES",
    "PipelineRun",
    "PipelineSpec",
    "codec_stage",
    "dp_config",
    "dp_settings",
    "resolve_pipeline",
    "stage_factory",
]
