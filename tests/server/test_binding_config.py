"""A device registry that binds tokens to certificates needs mutual TLS (``server.client_ca``) to be
enforced: a server without it refuses to start, naming both settings, instead of silently not binding."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json

import pytest
from tests.system.harness import experiment, make_setup

from hamrah.core.errors import ConfigError
from hamrah.server.app import FLServer


def _registry(path, certs: bool):
    entries = [
        {
            "name": f"device-{i:04d}",
            "token_sha256": hashlib.sha256(f"token{i}".encode()).hexdigest(),
            "signing_key": base64.b64encode(bytes([i + 1]) * 32).decode(),
            **({"cert_sha256": hashlib.sha256(f"cert{i}".encode()).hexdigest()} if certs else {}),
        }
        for i in range(2)
    ]
    path.write_text(json.dumps({"devices": entries}))
    return str(path)


def test_a_registry_with_certificate_hashes_without_client_ca_is_refused_at_start(tmp_path):
    setup, _, _ = make_setup(tmp_path, experiment(rounds=1), devices=0, goal_count=2)
    bound = dataclasses.replace(setup.server, tokens_file=_registry(tmp_path / "devices.json", certs=True))
    with pytest.raises(ConfigError) as e:
        FLServer(dataclasses.replace(setup, server=bound), tmp_path / "state")
    message = str(e.value)
    assert "server.tokens_file" in message and "server.client_ca is not set" in message
    assert "binds 2 devices' tokens to their certificates (e.g. device-0000)" in message
    assert "expected server.client_ca = the CA of the devices' certificates" in message
    assert not (tmp_path / "state").exists()  # nothing half-written


def test_a_registry_without_certificate_hashes_starts_without_client_ca(tmp_path):
    setup, _, _ = make_setup(tmp_path, experiment(rounds=1), devices=0, goal_count=2)
    plain = dataclasses.replace(setup.server, tokens_file=_registry(tmp_path / "devices.json", certs=False))
    FLServer(dataclasses.replace(setup, server=plain), tmp_path / "state").store.close()
