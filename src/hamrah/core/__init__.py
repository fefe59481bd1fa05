"""Core types: errors, seeds, named parameters, federated training results."""

from hamrah.core.errors import (
    AuthError,
    BudgetExhausted,
    ConfigError,
    DataError,
    DropoutThresholdExceeded,
    HamrahError,
    NotEnoughClients,
    ProtocolError,
    TrainingStopped,
    TransportError,
    WorkerFailed,
)

__all__ = [
    "AuthError",
    "BudgetExhausted",
    "ConfigError",
    "DataError",
    "DropoutThresholdExceeded",
    "HamrahError",
    "NotEnoughClients",
    "ProtocolError",
    "TrainingStopped",
    "TransportError",
    "WorkerFailed",
]
