"""A server that cannot start leaves nothing behind and says why in one line (issue 14's new-user case)."""

from __future__ import annotations

import asyncio
import dataclasses
import socket

import pytest
from tests.system.harness import experiment, make_setup

from hamrah.core.errors import ConfigError
from hamrah.server.app import FLServer


def test_a_port_in_use_is_a_config_error_and_no_state_folder_is_left(tmp_path):
    setup, _, _ = make_setup(tmp_path, experiment(rounds=1), devices=0, goal_count=2)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        server = FLServer(setup, tmp_path / "state")
        with pytest.raises(ConfigError, match=rf"--port {port}: cannot listen on 127.0.0.1:{port}: the port is in use"):
            asyncio.run(server.start(port))
    assert not (tmp_path / "state").exists()
    FLServer(setup, tmp_path / "state").store.close()  # the lock was released: the folder can be used


def test_a_failed_start_closes_the_tracking_sinks_as_a_failed_run(tmp_path, monkeypatch):
    from hamrah.observe.tracking import Tracking, TrackingConfig

    closed = []
    monkeypatch.setattr(Tracking, "close", lambda self, status: closed.append(status))
    setup, _, _ = make_setup(tmp_path, experiment(rounds=1), devices=0, goal_count=2)
    setup = dataclasses.replace(setup, tracking=TrackingConfig(tensorboard=True))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        server = FLServer(setup, tmp_path / "state")
        with pytest.raises(ConfigError, match="the port is in use"):
            asyncio.run(server.start(busy.getsockname()[1]))
    assert closed == ["FAILED"]  # an MLflow run is not left RUNNING, no TensorBoard writer left open
    assert not (tmp_path / "state").exists()


def test_a_wrong_config_leaves_no_state_folder_but_never_removes_an_existing_one(tmp_path):
    setup, _, _ = make_setup(tmp_path, experiment(rounds=1), devices=0, goal_count=2)
    bad = dataclasses.replace(setup, server=dataclasses.replace(setup.server, tokens_file=str(tmp_path / "missing")))
    with pytest.raises(ConfigError, match="missing"):
        FLServer(bad, tmp_path / "state")
    assert not (tmp_path / "state").exists()
    FLServer(setup, tmp_path / "state").store.close()  # a real state folder, then the same mistake
    with pytest.raises(ConfigError, match="missing"):
        FLServer(bad, tmp_path / "state")
    assert (tmp_path / "state" / "state.db").exists()
