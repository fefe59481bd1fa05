"""Robust aggregation: rules that fold one round's client deltas into one, resisting outliers.

Every rule is a callable ``(deltas, weights) -> Params`` with ``check(cohort_size)``; FedAvg's
server half takes one as ``aggregator=``. Pure torch, no I/O.
"""

from hamrah.aggregation.base import Aggregator, flatten, unflatten
from hamrah.aggregation.coordinate import Median, TrimmedMean, coordinate_median
from hamrah.aggregation.fltrust import FLTrust, fltrust_combine, trust_scores
from hamrah.aggregation.geomed import GeometricMedian, smoothed_weiszfeld
from hamrah.aggregation.krum import Bulyan, Krum, krum_scores
from hamrah.aggregation.mean import WeightedMean
from hamrah.aggregation.norm import NormBound
from hamrah.aggregation.registry import AGGREGATORS, build_aggregator

__all__ = [
    "AGGREGATORS", "Aggregator", "Bulyan", "FLTrust", "GeometricMedian", "Krum", "Median", "NormBound", "TrimmedMean",
    "WeightedMean", "build_aggregator", "coordinate_median", "flatten", "fltrust_combine", "krum_scores",
    "smoothed_weiszfeld", "trust_scores", "unflatten",
]
