"""[tracking] sinks that cannot start stop the run with one clear error before anything is written; a
sink that fails mid-run is dropped with one warning and the run and its own records carry on."""

from __future__ import annotations

import json
import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from tests.observe.test_tracking import tiny

from hamrah.core.errors import ConfigError
from hamrah.experiments.export import MANIFEST_FILE, MODEL_FILE
from hamrah.experiments.runner import run_experiment
from hamrah.observe.runs import read_records
from hamrah.observe.tracking import TensorBoardSink

pytest.importorskip("tensorboard", reason="the tracking extra: pip install 'hamrah[tracking]'")
pytest.importorskip("mlflow", reason="the tracking extra: pip install 'hamrah[tracking]'")


def free_port() -> int:
    with socket.socket() as s:  # bound, then closed: nothing listens on it
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FakeMlflow(BaseHTTPRequestHandler):
    """Just enough of MLflow's REST API for a run to start; metric batches get 500 once ``down`` is set."""

    down = threading.Event()

    def _answer(self, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):  # experiments/get-by-name
        self._answer(200, {"experiment": {"experiment_id": "1", "name": "hamrah", "lifecycle_stage": "active"}})

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path.endswith("/runs/create"):
            info = {"run_id": "r1", "run_uuid": "r1", "experiment_id": "1", "status": "RUNNING"}
            self._answer(200, {"run": {"info": {**info, "start_time": 0, "lifecycle_stage": "active"}, "data": {}}})
        elif self.down.is_set() and b"metrics" in body:
            self._answer(500, {"error_code": "INTERNAL_ERROR", "message": "the store went away"})
        else:
            self._answer(200, {})

    def log_message(self, *args):
        pass


@pytest.fixture
def fake_mlflow(monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # the user's setting is kept: no backoff waits
    FakeMlflow.down.clear()
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeMlflow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_unsupported_uri_scheme_is_one_clear_error_and_writes_nothing(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(ConfigError) as err:
        run_experiment(tiny(tensorboard=True, mlflow=True, mlflow_uri="nosuchstore:///m.db"), out)
    msg = str(err.value)
    assert "'nosuchstore:///m.db'" in msg and "http:" in msg and "pip install mlflow" in msg and "\n" not in msg
    assert not out.exists()  # the TensorBoard folder opened before it is gone too


def test_unreachable_tracking_server_is_one_clear_error_and_writes_nothing(tmp_path):
    uri, out = f"http://127.0.0.1:{free_port()}", tmp_path / "run"
    with pytest.raises(ConfigError) as err:
        run_experiment(tiny(tensorboard=True, mlflow=True, mlflow_uri=uri), out)
    msg = str(err.value)
    assert repr(uri) in msg and "Connection refused" in msg and "\n" not in msg
    assert not out.exists()


def test_unwritable_tensorboard_folder_is_one_clear_error_and_writes_nothing(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match=r"tensorboard_dir .*a_file/tb.* cannot be written"):
        run_experiment(tiny(tensorboard=True, tensorboard_dir=str(blocker / "tb")), out)
    assert not out.exists()


def test_server_failing_mid_run_is_dropped_and_the_run_carries_on(tmp_path, fake_mlflow, caplog):
    out = tmp_path / "run"

    def after(rec):
        if rec.round == 1:
            FakeMlflow.down.set()

    with caplog.at_level(logging.WARNING, logger="hamrah.tracking"):
        summary = run_experiment(tiny(mlflow=True, mlflow_uri=fake_mlflow), out, on_round=after)
    assert [r["round"] for r in read_records(out / "metrics.jsonl")] == [1, 2, 3]
    assert (out / "summary.json").exists() and summary["rounds_run"] == 3
    assert set(summary["tracking_failed"]) == {"mlflow"}
    warned = [r.getMessage() for r in caplog.records if r.name == "hamrah.tracking"]
    assert len(warned) == 1 and "mlflow" in warned[0]  # once, not once per round


def test_server_gone_mid_run_is_dropped_and_the_run_carries_on(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    FakeMlflow.down.clear()
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeMlflow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    out = tmp_path / "run"

    def after(rec):
        if rec.round == 1:  # the server goes away: nothing listens at the URI from now on
            server.shutdown()
            server.server_close()

    uri = f"http://127.0.0.1:{server.server_address[1]}"
    summary = run_experiment(tiny(mlflow=True, mlflow_uri=uri), out, on_round=after)
    assert [r["round"] for r in read_records(out / "metrics.jsonl")] == [1, 2, 3]
    assert json.loads((out / "summary.json").read_text())["tracking_failed"] == {
        "mlflow": "[Errno 111] Connection refused"
    }
    assert summary["rounds_run"] == 3


def test_tensorboard_failing_mid_run_is_dropped_and_the_run_carries_on(tmp_path, monkeypatch):
    real = TensorBoardSink.log_round

    def full_disk(self, record):
        if record["round"] >= 2:
            raise OSError(28, "No space left on device")
        real(self, record)

    monkeypatch.setattr(TensorBoardSink, "log_round", full_disk)
    out = tmp_path / "run"
    summary = run_experiment(tiny(tensorboard=True), out)
    assert [r["round"] for r in read_records(out / "metrics.jsonl")] == [1, 2, 3]
    assert summary["tracking_failed"] == {"tensorboard": "[Errno 28] No space left on device"}
    assert json.loads((out / "summary.json").read_text())["tracking_failed"] == summary["tracking_failed"]
    assert (out / MODEL_FILE).exists() and (out / MANIFEST_FILE).exists()
