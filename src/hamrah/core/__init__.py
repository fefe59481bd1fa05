"""Core types: errors, seeds, named parameters, federated training results."""

from hamrah.core.errors import ConfigError, DataError, HamrahError, NotEnoughClients

__all__ = ["ConfigError", "DataError", "HamrahError", "NotEnoughClients"]
