"""Federated algorithms: each a client half (a local-training plan) and a server half."""

from hamrah.algorithms.base import Algorithm, ClientResult, LocalSGD, cohort_size, weighted_mean_delta
from hamrah.algorithms.fedavg import FedAvg
from hamrah.algorithms.fedsgd import FedSGD
from hamrah.algorithms.local import LocalResult, batch_schedule, evaluate, train_local

__all__ = [
    "Algorithm", "ClientResult", "FedAvg", "FedSGD", "LocalResult", "LocalSGD",
    "batch_schedule", "cohort_size", "evaluate", "train_local", "weighted_mean_delta",
]
