"""TLS and mutual TLS on loopback (certificates refused outside their role), and a model of more than 50 MB
through a full round in chunks."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from tests.system.harness import device_config, experiment, make_setup, run_system

from hamrah.core.errors import TransportError
from hamrah.core.params import num_parameters
from hamrah.device.eligibility import ScriptedState
from hamrah.device.runtime import DeviceRuntime
from hamrah.device.store import ExampleStore
from hamrah.models import ModelSpec
from hamrah.server.app import FLServer
from hamrah.transport.certs import generate_tls, key_pem, make_cert, pem
from hamrah.transport.codec import CHUNK_BYTES
from hamrah.transport.identity import write_private


def test_a_round_over_mutual_tls(tmp_path):
    tls = generate_tls(tmp_path / "tls")
    setup, stores, tokens = make_setup(
        tmp_path,
        experiment(rounds=1),
        devices=3,
        goal_count=3,
        over_selection=1.0,
        min_reports=3,
        tls_cert=str(tls["server"]),
        tls_key=str(tls["server_key"]),
        client_ca=str(tls["ca"]),
    )
    kw = {"tls_ca": str(tls["ca"]), "tls_cert": str(tls["client"]), "tls_key": str(tls["client_key"])}
    _, summary, stats = asyncio.run(run_system(setup, tmp_path / "state", stores, tokens, device_kw=kw))
    assert summary["rounds_committed"] == 1 and sum(s.reported for s in stats) == 3


def test_mutual_tls_refuses_a_device_without_a_client_certificate(tmp_path):
    tls = generate_tls(tmp_path / "tls")
    setup, stores, tokens = make_setup(
        tmp_path,
        experiment(rounds=1),
        devices=1,
        goal_count=1,
        tls_cert=str(tls["server"]),
        tls_key=str(tls["server_key"]),
        client_ca=str(tls["ca"]),
    )

    async def attempt():
        server = FLServer(setup, tmp_path / "state")
        port = await server.start(0)
        cfg = device_config(port, token=tokens[0], tls_ca=str(tls["ca"]), unreachable_after_s=1.0)
        try:
            with ExampleStore(stores[0]) as store:
                await DeviceRuntime(cfg, store, ScriptedState.always()).run()
        finally:
            await server._grpc.stop(0)
            server.store.close()

    with pytest.raises(TransportError):
        asyncio.run(attempt())


@pytest.mark.slow
def test_a_model_over_50_mb_moves_through_a_full_round(tmp_path):
    exp = experiment(
        rounds=1, algorithm={"name": "fedavg", "client_fraction": 0.1, "local_epochs": 1, "batch_size": 100, "lr": 0.05}
    )
    setup, stores, tokens = make_setup(
        tmp_path, exp, devices=2, goal_count=2, over_selection=1.0, min_reports=2, reporting_timeout_s=120.0
    )
    big = ModelSpec("2nn", setup.model.input_shape, setup.model.num_classes, hidden=3600)
    setup = dataclasses.replace(setup, model=big)
    server, summary, stats = asyncio.run(run_system(setup, tmp_path / "state", stores, tokens))
    size = num_parameters(server.coordinator.params) * 4
    assert size > 50 * 2**20 and size > 40 * CHUNK_BYTES  # many chunks each way
    assert summary["rounds_committed"] == 1 and sum(s.reported for s in stats) == 2
    ckpt = tmp_path / "state" / "checkpoints" / "round_000001.safetensors"
    assert ckpt.stat().st_size > 50 * 2**20
    assert summary["final_accuracy"] > 0.1  # trained: the initial model scores about 0.1


def _cert_with_role(tmp_path, role: str) -> tuple[str, str, str]:
    """A CA and a certificate of ``role`` valid for 127.0.0.1 (so only its key usage can make TLS refuse it)."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = make_cert("ca", "test CA", ca_key.public_key(), ca_key)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = make_cert(role, f"a {role}", key.public_key(), ca_key, ca.subject, ("127.0.0.1", "localhost"))
    paths = tmp_path / "ca.pem", tmp_path / f"{role}.pem", tmp_path / f"{role}.key"
    paths[0].write_bytes(pem(ca))
    paths[1].write_bytes(pem(cert))
    write_private(paths[2], key_pem(key))
    return tuple(str(p) for p in paths)


def _one_device(tmp_path, setup, store, **kw):
    """Run one device against a server that opens no round for 3 s: return its stats (check-ins made),
    or raise what stopped it (TransportError: TLS refused the connection)."""

    async def attempt():
        server = FLServer(setup, tmp_path / "state")
        port = await server.start(0)
        cfg = device_config(port, unreachable_after_s=1.0, **kw)
        try:
            with ExampleStore(store) as s:
                runtime = DeviceRuntime(cfg, s, ScriptedState.always())
                try:
                    await asyncio.wait_for(runtime.run(), 3.0)
                except asyncio.TimeoutError:
                    pass
                return runtime.stats
        finally:
            await server._grpc.stop(0)
            server.store.close()

    return asyncio.run(attempt())


def test_a_server_certificate_is_refused_as_a_client_certificate(tmp_path):
    """On today's code generate_tls's certificates served any purpose: the server's was a valid client certificate."""
    tls = generate_tls(tmp_path / "tls")
    setup, stores, tokens = make_setup(
        tmp_path,
        experiment(rounds=1),
        devices=1,
        goal_count=1,
        tls_cert=str(tls["server"]),
        tls_key=str(tls["server_key"]),
        client_ca=str(tls["ca"]),
    )
    with pytest.raises(TransportError):
        _one_device(
            tmp_path,
            setup,
            stores[0],
            token=tokens[0],
            tls_ca=str(tls["ca"]),
            tls_cert=str(tls["server"]),
            tls_key=str(tls["server_key"]),
        )
    stats = _one_device(
        tmp_path,
        setup,
        stores[0],
        token=tokens[0],
        tls_ca=str(tls["ca"]),
        tls_cert=str(tls["client"]),
        tls_key=str(tls["client_key"]),
    )
    assert stats.check_ins >= 1  # the same server takes the client certificate


@pytest.mark.parametrize("role, refused", [("client", True), ("server", False)])
def test_a_client_certificate_is_refused_as_a_server_certificate(tmp_path, role, refused):
    ca, cert, key = _cert_with_role(tmp_path, role)
    setup, stores, tokens = make_setup(
        tmp_path, experiment(rounds=1), devices=1, goal_count=1, tls_cert=cert, tls_key=key
    )
    if refused:
        with pytest.raises(TransportError):
            _one_device(tmp_path, setup, stores[0], token=tokens[0], tls_ca=ca)
    else:
        assert _one_device(tmp_path, setup, stores[0], token=tokens[0], tls_ca=ca).check_ins >= 1
