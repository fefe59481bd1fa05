"""Watch a federation: telemetry the server feeds, Prometheus export, run tracking sinks, the dashboard."""

from hamrah.observe.runs import RunFolder, epsilon_of, phases_of, read_records, write_failure
from hamrah.observe.telemetry import LogRing, Telemetry

__all__ = ["LogRing", "RunFolder", "Telemetry", "epsilon_of", "phases_of", "read_records", "write_failure"]
