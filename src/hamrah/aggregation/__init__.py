"""Robust aggregation: rules that fold one round's client deltas into one, resisting outliers.

Every rule is a :class:`RobustAggregator`: a callable ``(deltas, weights) -> Params`` with
``check(cohort_size)``. A driver applies it, in place of the weighted mean, to the statistics an
algorithm declares ``robust`` (the delta) while building the round's
:class:`~hamrah.core.aggregate.Aggregate`. Pure torch, no I/O.
"""

from hamrah.aggregation.base import RobustAggregator, flatten, unflatten
from hamrah.aggregation.coordinate import Median, TrimmedMean, coordinate_median
from hamrah.aggregation.fltrust import FLTrust, fltrust_combine, trust_scores
from hamrah.aggregation.geomed import GeometricMedian, smoothed_weiszfeld
from hamrah.aggregation.krum import Bulyan, Krum, krum_scores
from hamrah.aggregation.mean import WeightedMean
from hamrah.aggregation.norm import NormBound
from hamrah.aggregation.registry import AGGREGATORS, build_aggregator

__all__ = [
    "AGGREGATORS",
    "Bulyan",
    "FLTrust",
    "GeometricMedian",
    "Krum",
    "Median",
    "NormBound",
    "RobustAggregator",
    "TrimmedMean",
    "WeightedMean",
    "build_aggregator",
    "coordinate_median",
    "flatten",
    "fltrust_combine",
    "krum_scores",
    "smoothed_weiszfeld",
    "trust_scores",
    "unflatten",
]
