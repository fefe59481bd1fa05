"""A server start that a user's mistake stops says what is wrong in one line and leaves no state folder
(a bad port, bad TLS files, a dashboard that cannot start, credentials no device can use)."""

from __future__ import annotations

import asyncio
import dataclasses
import socket

import pytest
from tests.system.harness import experiment, make_setup

from hamrah.core.errors import ConfigError
from hamrah.observe.dashboard import DashboardConfig
from hamrah.server.app import FLServer
from hamrah.transport.certs import generate_tls
from hamrah.transport.security import TokenRegistry


def _setup(tmp_path, **server):
    setup, _, _ = make_setup(tmp_path, experiment(rounds=1), devices=0, goal_count=2)
    if server:
        setup = dataclasses.replace(setup, server=dataclasses.replace(setup.server, **server))
    return setup


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _start_and_stop(server: FLServer, port: int) -> int:
    """Start ``server`` and, if it started, stop it again in the same event loop; return the bound port."""
    bound = await server.start(port)
    await server._grpc.stop(grace=0)
    server.watch.stop()
    server.store.close()
    return bound


def _start_fails(setup, state, port: int = 0, match: str = "") -> None:
    """Start a server that must fail with a ConfigError matching ``match`` (stopped again if it started)."""
    with pytest.raises(ConfigError, match=match):
        asyncio.run(_start_and_stop(FLServer(setup, state), port))


@pytest.mark.parametrize("port", [-1, 70000, 65536])
def test_a_port_outside_0_to_65535_is_refused_and_leaves_no_state_folder(tmp_path, port):
    state = tmp_path / "state"
    _start_fails(_setup(tmp_path), state, port, rf"--port {port}: expected a port number from 0 to 65535")
    assert not state.exists()


@pytest.fixture
def tls(tmp_path):
    good, other = generate_tls(tmp_path / "tls"), generate_tls(tmp_path / "other")
    junk = tmp_path / "junk.pem"
    junk.write_text("this is not a PEM file\n")
    return good, other, junk


TLS_MISTAKES = {
    "cert not PEM": ("tls_cert", "junk", r"server.tls_cert = '.*junk.pem': not a PEM certificate"),
    "key not PEM": ("tls_key", "junk", r"server.tls_key = '.*junk.pem': not a PEM private key"),
    "another server's key": (
        "tls_key",
        "other",
        r"server.tls_key = '.*other/server.key' is not the key of server.tls_cert = '.*tls/server.pem'",
    ),
    "client_ca not PEM": ("client_ca", "junk", r"server.client_ca = '.*junk.pem': not a PEM certificate"),
    "cert missing": ("tls_cert", "missing", r"server.tls_cert = '.*nope.pem': cannot read"),
}


@pytest.mark.parametrize("mistake", list(TLS_MISTAKES))
def test_bad_tls_files_are_named_not_blamed_on_the_port_and_leave_no_state_folder(tmp_path, tls, mistake):
    good, other, junk = tls
    key, which, match = TLS_MISTAKES[mistake]
    value = {"junk": str(junk), "other": str(other["server_key"]), "missing": str(tmp_path / "nope.pem")}[which]
    base = {"tls_cert": str(good["server"]), "tls_key": str(good["server_key"]), "client_ca": str(good["ca"])}
    state = tmp_path / "state"
    _start_fails(_setup(tmp_path, **{**base, key: value}), state, 0, match)
    assert not state.exists()
    server = FLServer(_setup(tmp_path, **base), state)  # the good files start
    assert asyncio.run(_start_and_stop(server, 0)) > 0


def test_a_dashboard_on_a_taken_port_leaves_no_state_folder(tmp_path):
    state = tmp_path / "state"
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        setup = dataclasses.replace(_setup(tmp_path), dashboard=DashboardConfig(enabled=True, port=taken))
        _start_fails(setup, state, 0, rf"dashboard: cannot listen on 127.0.0.1:{taken}")
    assert not state.exists()
    port = _free_port()  # the dashboard on the server's own port
    setup = dataclasses.replace(_setup(tmp_path), dashboard=DashboardConfig(enabled=True, port=port))
    _start_fails(setup, state, port, rf"dashboard: cannot listen on 127.0.0.1:{port}")
    assert not state.exists()
    FLServer(_setup(tmp_path), state).store.close()  # the lock was released: the folder can be used


def test_a_dashboard_token_file_of_plaintext_tokens_leaves_no_state_folder_and_keeps_an_existing_one(tmp_path):
    (tmp_path / "dash.txt").write_text("a-plaintext-operator-token\n")
    setup = dataclasses.replace(
        _setup(tmp_path), dashboard=DashboardConfig(enabled=True, port=0, token_file=str(tmp_path / "dash.txt"))
    )
    state = tmp_path / "state"
    _start_fails(setup, state, 0, "dashboard.token_file .* is not a sha256 hex digest")
    assert not state.exists()
    FLServer(_setup(tmp_path), state).store.close()  # a real state folder, then the same mistake
    (state / "failed.json").write_text('{"error": "the last run crashed"}')
    _start_fails(setup, state, 0, "dashboard.token_file")
    assert (state / "state.db").exists()
    assert (state / "failed.json").exists()  # a restart that did not start leaves the last failure shown


def test_credentials_no_device_can_use_are_refused_at_start(tmp_path):
    (tmp_path / "empty.txt").write_text("# no tokens yet\n\n")
    (tmp_path / "none.json").write_text('{"devices": []}')
    state = tmp_path / "state"
    for name in ("empty.txt", "none.json"):
        bad = _setup(tmp_path, tokens_file=str(tmp_path / name))
        with pytest.raises(ConfigError, match=rf"server.tokens_file '.*{name}' holds no device token; expected"):
            FLServer(bad, state)
        assert not state.exists()
    bad = _setup(tmp_path, revoked_file=str(tmp_path / "revokd.txt"))
    with pytest.raises(ConfigError, match=r"server.revoked_file '.*revokd.txt': no such file; expected"):
        FLServer(bad, state)
    assert not state.exists()
    (tmp_path / "revokd.txt").write_text("")  # an empty list revokes nobody
    FLServer(bad, state).store.close()


def test_a_tokens_line_with_spaces_is_refused_with_its_line_number(tmp_path):
    (tmp_path / "tokens.txt").write_text("# devices\ntok-a\ntok b secret\n")
    with pytest.raises(ConfigError, match=r"tokens.txt: line 3 holds spaces; expected one token") as e:
        TokenRegistry(tmp_path / "tokens.txt")
    assert "secret" not in str(e.value)  # a token is never echoed
    (tmp_path / "tokens.txt").write_text("# devices\ntok-a\n  tok-b  \n")  # surrounding blanks are not spaces in it
    assert TokenRegistry(tmp_path / "tokens.txt").count() == 2
