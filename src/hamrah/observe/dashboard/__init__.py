"""The dashboard: a small read-only HTTP server with bundled pages (no CDN), live over server-sent events."""

from hamrah.observe.dashboard.config import DashboardConfig, TokenCheck, dashboard_config, is_loopback
from hamrah.observe.dashboard.server import DashboardServer, Source, serve_folder

__all__ = [
    "DashboardConfig",
    "DashboardServer",
    "Source",
    "TokenCheck",
    "dashboard_config",
    "is_loopback",
    "serve_folder",
]
