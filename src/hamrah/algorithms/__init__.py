"""Federated algorithms: each a client half (local SGD + gradient transforms), the statistics its clients
send, and a server half that applies one aggregate of them."""

from hamrah.algorithms.aggregate import aggregate_results, apply_results, contributions
from hamrah.algorithms.base import (
    DELTA,
    Algorithm,
    ClientResult,
    ClientUpdate,
    GradientTransform,
    LocalSGD,
    NoState,
    apply_delta,
    cohort_size,
    delta_statistics,
    mean_delta,
)
from hamrah.algorithms.client import client_update
from hamrah.algorithms.fedavg import FedAvg
from hamrah.algorithms.fednova import A_NORM, FedNova, a_norm
from hamrah.algorithms.fedopt import FedOpt, FedOptState
from hamrah.algorithms.fedprox import FedProx
from hamrah.algorithms.fedsgd import FedSGD
from hamrah.algorithms.local import LocalResult, batch_schedule, evaluate, evaluate_metrics, train_local
from hamrah.algorithms.personal import Ditto, FedPer, Personalized
from hamrah.algorithms.registry import ALGORITHMS, build, hyperparameters, statistics_of
from hamrah.algorithms.scaffold import CONTROL, Scaffold, ScaffoldState
from hamrah.algorithms.state import flatten_state, unflatten_state
from hamrah.algorithms.transforms import Correction, Momentum, Proximal

__all__ = [
    "ALGORITHMS",
    "A_NORM",
    "CONTROL",
    "DELTA",
    "Algorithm",
    "ClientResult",
    "ClientUpdate",
    "Correction",
    "Ditto",
    "FedAvg",
    "FedNova",
    "FedOpt",
    "FedOptState",
    "FedPer",
    "FedProx",
    "FedSGD",
    "GradientTransform",
    "LocalResult",
    "LocalSGD",
    "Momentum",
    "NoState",
    "Personalized",
    "Proximal",
    "Scaffold",
    "ScaffoldState",
    "a_norm",
    "aggregate_results",
    "apply_delta",
    "apply_results",
    "batch_schedule",
    "build",
    "client_update",
    "cohort_size",
    "contributions",
    "delta_statistics",
    "evaluate",
    "evaluate_metrics",
    "flatten_state",
    "hyperparameters",
    "mean_delta",
    "statistics_of",
    "train_local",
    "unflatten_state",
]
