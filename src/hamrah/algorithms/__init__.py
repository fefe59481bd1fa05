"""Federated algorithms: each a client half (local SGD + gradient transforms) and a server half."""

from hamrah.algorithms.base import (
    Aggregator, Algorithm, ClientResult, ClientUpdate, GradientTransform, LocalSGD, NoState, cohort_size,
    mean_params, weighted_mean_delta,
)
from hamrah.algorithms.client import client_update
from hamrah.algorithms.fedavg import FedAvg
from hamrah.algorithms.fednova import FedNova, a_norm
from hamrah.algorithms.fedopt import FedOpt, FedOptState
from hamrah.algorithms.fedprox import FedProx
from hamrah.algorithms.fedsgd import FedSGD
from hamrah.algorithms.local import LocalResult, batch_schedule, evaluate, train_local
from hamrah.algorithms.registry import ALGORITHMS, WEIGHTED_MEAN_ALGORITHMS, build, hyperparameters
from hamrah.algorithms.scaffold import Scaffold, ScaffoldState
from hamrah.algorithms.state import flatten_state, unflatten_state
from hamrah.algorithms.transforms import Correction, Momentum, Proximal

__all__ = [
    "ALGORITHMS", "WEIGHTED_MEAN_ALGORITHMS", "Aggregator", "Algorithm", "ClientResult", "ClientUpdate", "Correction", "FedAvg", "FedNova",
    "FedOpt", "FedOptState", "FedProx", "FedSGD", "GradientTransform", "LocalResult", "LocalSGD", "Momentum",
    "NoState", "Proximal", "Scaffold", "ScaffoldState", "a_norm", "batch_schedule", "build", "client_update",
    "cohort_size", "evaluate", "flatten_state", "hyperparameters", "mean_params", "train_local", "unflatten_state",
    "weighted_mean_delta",
]
