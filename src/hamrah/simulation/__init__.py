"""The fast in-process simulator."""

from hamrah.core.params import seeded
from hamrah.simulation.batched import supports_batching, train_cohort
from hamrah.simulation.simulator import RoundRecord, SimulationConfig, SimulationResult, Simulator

__all__ = [
    "RoundRecord",
    "SimulationConfig",
    "SimulationResult",
    "Simulator",
    "seeded",
    "supports_batching",
    "train_cohort",
]
