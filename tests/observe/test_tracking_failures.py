"""[tracking] sinks that cannot start stop the run with one clear error before anything is written."""

from __future__ import annotations

import socket

import pytest
from tests.observe.test_tracking import tiny

from hamrah.core.errors import ConfigError
from hamrah.experiments.runner import run_experiment

pytest.importorskip("tensorboard", reason="the tracking extra: pip install 'hamrah[tracking]'")
pytest.importorskip("mlflow", reason="the tracking extra: pip install 'hamrah[tracking]'")


def free_port() -> int:
    with socket.socket() as s:  # bound, then closed: nothing listens on it
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
