"""The cross-device server (Bonawitz et al. 2019): a Coordinator per population, Selectors, a Master
Aggregator with Aggregators, durable round state, and the gRPC endpoint devices talk to."""

from hamrah.loop import RunPlan
from hamrah.server.aggregators import AggregatorShare, MasterAggregator
from hamrah.server.app import FLServer, ServerSetup
from hamrah.server.config import ServerConfig, server_config
from hamrah.server.coordinator import Coordinator, LateReport
from hamrah.server.selector import Selector
from hamrah.server.state import ServerStore

__all__ = [
    "AggregatorShare",
    "Coordinator",
    "FLServer",
    "LateReport",
    "MasterAggregator",
    "RunPlan",
    "Selector",
    "ServerConfig",
    "ServerSetup",
    "ServerStore",
    "server_config",
]
