"""The lazy stage registry: a stage's module is imported only when a spec uses it.

A run without DP imports neither ``hamrah.privacy``'s accountant nor dp_accounting, a run without HE
neither tenseal nor phe (``tests/pipeline/test_lazy_imports.py``).
"""

from __future__ import annotations

import importlib
from typing import Any

from hamrah.core.errors import ConfigError

# stage name -> "module:attribute", imported only when a spec uses it
STAGES: dict[str, str] = {
    "quantize": "hamrah.compression:StochasticQuantizer",
    "sign": "hamrah.compression:SignEF",
    "topk": "hamrah.compression:TopK",
    "mask": "hamrah.compression:RandomMask",
    "float16": "hamrah.compression:HalfPrecision",
    "bfloat16": "hamrah.compression:HalfPrecision",
    "secagg": "hamrah.secagg.stage:SecureAggregation",
    "homomorphic": "hamrah.he.stage:HomomorphicSum",
    "dp": "hamrah.privacy.stages:dp_stages",
    "distributed_dp": "hamrah.pipeline.distributed:distributed_stage",
}


def stage_factory(name: str) -> Any:
    """Return the class or factory the lazy registry holds for stage ``name``, importing its module now.

    Raises:
        ConfigError: an unknown stage name.
    """
    if name not in STAGES:
        raise ConfigError(f"pipeline stage {name!r}: expected one of {', '.join(STAGES)}")
    module, attr = STAGES[name].split(":")
    return getattr(importlib.import_module(module), attr)


__all__ = ["STAGES", "stage_factory"]
