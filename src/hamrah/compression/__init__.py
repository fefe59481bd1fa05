"""Codecs for client updates, each a pipeline stage (``hamrah.core.pipeline``) with exact wire bytes.

- :class:`StochasticQuantizer`: unbiased 8/4/2-bit quantization (Suresh et al. 2017; Alistarh et al.
  2017), plus a shared-range "ring" scheme that secure aggregation can sum.
- :class:`SignEF`: 1-bit signs with error feedback (Karimireddy et al. 2019).
- :class:`TopK`: top-k sparsification with error feedback (Aji & Heafield 2017; Stich et al. 2018).
- :class:`RandomMask`: seeded random subsets, rescaled (Konecny et al. 2016).
- :class:`HalfPrecision`: float16 / bfloat16.
"""

from hamrah.compression.floats import HalfPayload, HalfPrecision
from hamrah.compression.mask import MaskedPayload, RandomMask, mask_nbytes
from hamrah.compression.quantize import (
    QuantizedPayload,
    StochasticQuantizer,
    quantized_nbytes,
)
from hamrah.compression.sign import SignEF, SignPayload
from hamrah.compression.topk import SparsePayload, TopK, topk_nbytes

__all__ = [
    "HalfPayload",
    "HalfPrecision",
    "MaskedPayload",
    "QuantizedPayload",
    "RandomMask",
    "SignEF",
    "SignPayload",
    "SparsePayload",
    "StochasticQuantizer",
    "TopK",
    "mask_nbytes",
    "quantized_nbytes",
    "topk_nbytes",
]
