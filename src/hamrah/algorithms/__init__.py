"""Federated algorithms: each a client half (local SGD + gradient transforms) and a server half."""

from hamrah.algorithms.base import (
    Aggregator, Algorithm, ClientResult, ClientUpdate, GradientTransform, LocalSGD, NoState, cohort_size,
    mean_params, weighted_mean_delta,
)
from hamrah.algorithms.client import client_update
from hamrah.algorithms.fedavg import FedAvg
from hamrah.algorithms.fedsgd import FedSGD
from hamrah.algorithms.local import LocalResult, batch_schedule, evaluate, train_local

__all__ = [
    "Aggregator", "Algorithm", "ClientResult", "ClientUpdate", "FedAvg", "FedSGD", "GradientTransform",
    "LocalResult", "LocalSGD", "NoState", "batch_schedule", "client_update", "cohort_size", "evaluate",
    "mean_params", "train_local", "weighted_mean_delta",
]
