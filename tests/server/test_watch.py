"""The server's observation side: a failed run leaves failed.json with its error and last log lines; a
restart clears it; nothing is served unless [dashboard] is enabled."""

from __future__ import annotations

import json
import logging

from hamrah.observe.dashboard import DashboardConfig
from hamrah.observe.runs import RunFolder
from hamrah.server.config import ServerConfig
from hamrah.server.watch import Watch


def test_failure_is_recorded_with_the_last_log_lines_and_cleared_on_restart(tmp_path):
    watch = Watch(
        DashboardConfig(enabled=True, port=0), None, tmp_path, {"privacy": {"target_epsilon": 3.0}}, lambda: False
    )
    watch.start(ServerConfig())
    try:
        assert watch.status() == ("running", None)
        assert watch.dashboard.source.run(".")["config"] == {"privacy": {"target_epsilon": 3.0}}  # before any summary
        logging.getLogger("hamrah.server").warning("round 3: abandoned")
        watch.failed(RuntimeError("round 3: abandoned 20 times"))
        assert watch.status() == ("failed", "RuntimeError: round 3: abandoned 20 times")
        saved = json.loads((tmp_path / "failed.json").read_text())
        assert saved["error"] == "RuntimeError: round 3: abandoned 20 times"
        assert any("round 3: abandoned" in line for line in saved["log"])
        assert RunFolder(tmp_path).run(".")["status"] == "failed"
    finally:
        watch.stop()
    again = Watch(DashboardConfig(enabled=True, port=0), None, tmp_path, {}, lambda: True)
    again.start(ServerConfig())
    again.stop()
    assert not (tmp_path / "failed.json").exists()


def test_off_by_default(tmp_path):
    for cfg in (None, DashboardConfig()):
        watch = Watch(cfg, None, tmp_path, {}, lambda: False)
        watch.start(ServerConfig())
        assert watch.telemetry is None and watch.dashboard is None
        watch.stop()


def test_server_tracking_gets_each_committed_record(tmp_path):
    import pytest

    pytest.importorskip("tensorboard", reason="the tracking extra: pip install 'hamrah[tracking]'")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from hamrah.observe.tracking import TrackingConfig

    metrics = tmp_path / "metrics.jsonl"
    watch = Watch(None, TrackingConfig(tensorboard=True), tmp_path, {"run": {"rounds": 3}}, lambda: False)
    watch.start(ServerConfig())
    for n in (1, 2, 3):  # the store rewrites metrics.jsonl after each commit
        metrics.write_text("".join(json.dumps({"round": r, "test_accuracy": r / 10}) + "\n" for r in range(1, n + 1)))
    watch.stop()
    acc = EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    assert [(e.step, round(e.value, 6)) for e in acc.Scalars("test_accuracy")] == [(1, 0.1), (2, 0.2), (3, 0.3)]


def test_a_taken_dashboard_port_is_a_clear_error(tmp_path):
    import socket

    import pytest

    from hamrah.core.errors import ConfigError

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        watch = Watch(DashboardConfig(enabled=True, port=s.getsockname()[1]), None, tmp_path, {}, lambda: False)
        with pytest.raises(ConfigError, match="cannot listen on 127.0.0.1"):
            watch.start(ServerConfig())
