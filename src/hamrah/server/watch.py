"""The server's observation side: the telemetry its gRPC edge feeds, the live dashboard and
``/metrics`` on a second port, and the ``[tracking]`` sinks fed from the committed round records.

All of it runs beside the event loop: the service only bumps counters (``hamrah.observe.telemetry``);
the dashboard answers in its own threads and reads the state folder's ``metrics.jsonl``; the tracking
sinks are fed by a thread that follows the same file. Nothing here can change a round.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from hamrah.observe.dashboard import DashboardConfig, DashboardServer, Source
from hamrah.observe.runs import RunFolder, write_failure
from hamrah.observe.telemetry import LogRing, Telemetry
from hamrah.observe.tracking import RecordFeed, Tracking, TrackingConfig
from hamrah.server.config import ServerConfig

log = logging.getLogger("hamrah.server")


class Watch:
    """Telemetry, dashboard and tracking of one server run.

    Args:
        dashboard: the ``[dashboard]`` section (None or not enabled: no dashboard, no telemetry).
        tracking: the ``[tracking]`` section (None: no sinks).
        state_dir: the server's state folder (its ``metrics.jsonl`` is the round records).
        config: the resolved run config (logged once by the tracking sinks).
        finished: returns True once the server has committed its last round.

    Raises:
        ConfigError: a tracking sink's package is missing (names the extra).
    """

    def __init__(
        self,
        dashboard: DashboardConfig | None,
        tracking: TrackingConfig | None,
        state_dir: Path,
        config: dict,
        finished: Callable[[], bool],
    ):
        self.cfg, self.state_dir, self.finished, self.config = dashboard, Path(state_dir), finished, config
        on = dashboard is not None and dashboard.enabled
        self.telemetry = Telemetry() if on else None
        self.tracking = Tracking(tracking, self.state_dir, config)
        self.error: str | None = None
        self.dashboard: DashboardServer | None = None
        self._feed: RecordFeed | None = None
        self._ring: LogRing | None = None

    def status(self) -> tuple[str, str | None]:
        """Return the live run's (status, error) for the dashboard."""
        if self.error is not None:
            return "failed", self.error
        return ("finished" if self.finished() else "running"), None

    def start(self, server: ServerConfig) -> None:
        """Start the dashboard (HTTPS with the server's certificate, and client certificates required
        when the server requires them) and the tracking feed."""
        if self.telemetry is not None:
            tls = (server.tls_cert, server.tls_key, server.client_ca) if server.tls_cert else None
            source = Source(RunFolder(self.state_dir, always=(".",)), self.telemetry, self.status, self.config)
            self.dashboard = DashboardServer(source, self.cfg, tls).start()  # ConfigError on a taken port
            self._ring = LogRing(self.telemetry)
            logging.getLogger("hamrah").addHandler(self._ring)
            log.info(
                "dashboard on %s (%s)",
                self.dashboard.url,
                "token required" if self.dashboard.tokens.required else "no token: loopback only",
            )
        if self.tracking.sinks:
            self._feed = RecordFeed(self.state_dir / "metrics.jsonl", self.tracking.log_round).start()
        (self.state_dir / "failed.json").unlink(missing_ok=True)  # started: a restarted run is not failed

    def failed(self, err: BaseException) -> None:
        """Record that the run failed: shown live, and written to ``failed.json`` with the last log lines."""
        self.error = f"{type(err).__name__}: {err}"
        lines = self.telemetry.snapshot(max_devices=0)["logs"] if self.telemetry is not None else []
        write_failure(self.state_dir, err, lines)

    def stop(self) -> None:
        """Stop the dashboard and hand the last records to the sinks."""
        if self._feed is not None:
            self._feed.stop()
        self.tracking.close("FAILED" if self.error else "FINISHED")
        if self.dashboard is not None:
            self.dashboard.stop()
        if self._ring is not None:
            logging.getLogger("hamrah").removeHandler(self._ring)


__all__ = ["Watch"]
