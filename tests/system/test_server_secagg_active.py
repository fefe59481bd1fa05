"""Secure aggregation against a malicious server over gRPC on loopback (issue 12, item 5).

Devices hold provisioned kits (`hamrah provision`: Ed25519 signing key, the CA's identity certificate of
it, the CA). With ``[secure_aggregation] malicious_server = true`` an honest server's rounds commit the
plain model; a server that lies (a test double of its secure round) is caught by the honest devices,
which abort before revealing any share: told different contributor sets, given a made-up device, or
handed a substituted key. The server refuses the mode at start without provisioned device keys."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import ClassVar

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from tests.system.harness import device_config, make_setup, records, run_system
from tests.system.test_server_secagg import _experiment

from hamrah.core.errors import ConfigError, NotEnoughClients
from hamrah.core.params import max_abs_diff
from hamrah.device.fleet import run_fleet
from hamrah.secagg import ConsistencyBroadcast, ConsistencyRequest, SignedKeysBroadcast, SignedPeerKeys
from hamrah.secagg.roster import JoinIdentity
from hamrah.server import secure_rounds
from hamrah.server.app import FLServer
from hamrah.server.secure import SecureRound
from hamrah.transport.certs import make_cert
from hamrah.transport.identity import DeviceKey, identity_certificate
from hamrah.transport.proto import fl_pb2 as pb
from hamrah.transport.provision import device_folders, provision

DEVICES = 6
SECURE = {"variant": "secagg", "clip": 0.5, "input_bits": 20, "malicious_server": True}


def _kits(tmp_path, secure, rounds=1, **server):
    files = provision(tmp_path / "pki", DEVICES)
    s = files["server"]
    setup, stores, _ = make_setup(
        tmp_path,
        _experiment(secure, rounds=rounds),
        devices=DEVICES,
        tokens_file=str(files["registry"]),
        tls_cert=str(s / "server.pem"),
        tls_key=str(s / "server.key"),
        client_ca=str(s / "ca.pem"),
        goal_count=DEVICES,
        over_selection=1.0,
        min_reports=5,
        **server,
    )
    return setup, stores, device_folders(files["devices"], DEVICES)


def test_honest_malicious_server_mode_commits_the_plain_model(tmp_path):
    plain_setup, stores, kits = _kits(tmp_path, None)
    plain, _, _ = asyncio.run(run_system(plain_setup, tmp_path / "plain", stores, kits))
    setup, _, _ = _kits(tmp_path, SECURE)
    active, summary, stats = asyncio.run(run_system(setup, tmp_path / "active", stores, kits))
    (rec,) = records(tmp_path / "active", setup)
    assert summary["rounds_committed"] == 1 and rec["reported"] == DEVICES
    assert rec["secagg_survivors"] == {
        "join": 6,
        "advertise_keys": 6,
        "share_keys": 6,
        "masked_input": 6,
        "consistency_check": 6,
        "unmasking": 6,
    }
    assert max_abs_diff(active.coordinator.params, plain.coordinator.params) < 1e-4


class _LyingRound(SecureRound):
    """A malicious server's secure round: it relays whatever serves it and records every share it gets."""

    shares: ClassVar[list[int]] = []
    lie: str = ""

    def receive(self, stage, message):
        if stage == pb.UNMASKING:
            type(self).shares.append(message.client_id)  # any share reaching the server is a failure of the test
        if stage in (pb.CONSISTENCY_CHECK, pb.UNMASKING):
            self.inbox = {**getattr(self, "inbox", {}), message.client_id: message}  # no checks: it lies anyway
            return
        super().receive(stage, message)

    def close(self, stage):
        out = super().close(stage) if stage != pb.CONSISTENCY_CHECK else None
        if stage == pb.ADVERTISE_KEYS and self.lie == "substitute":
            # replace device 5's mask key, for everyone, by one the server knows the secret of
            fake = b"\x09" * 32
            return {
                u: SignedKeysBroadcast(
                    m.round_id,
                    u,
                    tuple(
                        SignedPeerKeys(p.client_id, p.c_public, fake, p.signature) if p.client_id == 5 else p
                        for p in m.peers
                    ),
                )
                for u, m in out.items()
            }
        if stage == pb.MASKED_INPUT and self.lie == "split":
            # the lie that unmasks x_5 under the semi-honest protocol: "5 dropped" to 0-2, "5 survived" to 3-5
            return {
                u: ConsistencyRequest(m.round_id, u, tuple(v for v in m.contributors if u > 2 or v != 5))
                for u, m in out.items()
            }
        if stage == pb.CONSISTENCY_CHECK:
            # best relay for the liar: each group gets every signature over the set it was told
            return {
                u: ConsistencyBroadcast(
                    self.round_idx,
                    u,
                    tuple((v, self.inbox[v].signature) for v in sorted(self.inbox) if (v > 2) == (u > 2)),
                )
                for u in self.inbox
            }
        return out


async def _serve_liar(setup, state_dir, stores, kits):
    server = FLServer(setup, state_dir)
    port = await server.start(0)
    fleet = asyncio.ensure_future(run_fleet(device_config(port, population=setup.server.population), stores, kits))
    with pytest.raises(NotEnoughClients):  # its only attempt is abandoned (max_round_attempts = 1)
        await asyncio.wait_for(server.serve(linger_s=0.5), 120)
    return await asyncio.wait_for(fleet, 30)


@pytest.mark.parametrize(("lie", "aborted"), [("split", DEVICES), ("substitute", DEVICES - 1)])
def test_honest_devices_abort_before_revealing_anything_when_the_server_lies(tmp_path, monkeypatch, lie, aborted):
    """split: two halves told different contributor sets (U3 with and without device 5) each collect 3
    signatures, below T = 4, so every device aborts at unmasking. substitute: device 5's advertised mask
    key replaced by the server's own; its signature no longer verifies and every other device aborts at
    share_keys (device 5 is never shown its own key; it hears from the server that the round ended). In
    both, no share of any secret reaches the server and the round commits nothing."""
    monkeypatch.setattr(secure_rounds, "SecureRound", type("Liar", (_LyingRound,), {"shares": [], "lie": lie}))
    setup, stores, kits = _kits(tmp_path, SECURE, secagg_stage_timeout_s=2.0, max_round_attempts=1)
    stats = asyncio.run(_serve_liar(setup, tmp_path / "state", stores, kits))
    liar = secure_rounds.SecureRound
    assert liar.shares == []
    assert records(tmp_path / "state", setup) == []
    assert sum(s.failed for s in stats) == aborted  # each aborted its part (a FAILED report), none reported
    assert sum(s.reported for s in stats) == 0


def test_a_roster_with_a_made_up_device_is_refused_by_every_device(tmp_path, monkeypatch):
    """The server adds a device of its own (a certificate signed by a CA it made): devices check every
    certificate against their kit's CA and abort before advertising keys."""

    class Forger(_LyingRound):
        shares: ClassVar[list[int]] = []

        def _start_active(self, joined):
            key = ec.generate_private_key(ec.SECP256R1())
            ca = make_cert("ca", "hamrah CA", key.public_key(), key)
            fake = identity_certificate("device-9999", DeviceKey.generate().public_bytes, key, ca)
            self.identities[99] = JoinIdentity(b"\x01" * 32, fake.public_bytes(serialization.Encoding.DER))
            self.examples[99], self.losses[99] = 1, 0.0
            return super()._start_active([*joined, 99])

    monkeypatch.setattr(secure_rounds, "SecureRound", Forger)
    setup, stores, kits = _kits(tmp_path, SECURE, secagg_stage_timeout_s=2.0, max_round_attempts=1)
    stats = asyncio.run(_serve_liar(setup, tmp_path / "state", stores, kits))
    assert Forger.shares == [] and sum(s.failed for s in stats) == DEVICES


def test_malicious_server_mode_is_refused_at_start_without_provisioned_keys(tmp_path):
    """A plain tokens file has no identity keys: the server refuses to start, naming why."""
    setup, _, _ = make_setup(tmp_path, _experiment(SECURE), devices=DEVICES)
    with pytest.raises(ConfigError, match="malicious_server.*no identity key"):
        FLServer(setup, tmp_path / "state")
    bare = dataclasses.replace(setup, server=dataclasses.replace(setup.server, tokens_file=None))
    with pytest.raises(ConfigError, match="needs server.tokens_file"):
        FLServer(bare, tmp_path / "state2")
    assert not (tmp_path / "state").exists() and not (tmp_path / "state2").exists()


def test_distributed_dp_runs_over_the_malicious_server_protocol(tmp_path):
    """Both at once: devices noise their ring vectors, and the sum runs the actively secure protocol."""
    privacy = {"mode": "distributed", "clip": 50.0, "noise_multiplier": 1e-6, "delta": 1e-5, "sampling": "poisson"}
    secure = {"variant": "secagg", "ring_bits": 32, "min_contributors": 4, "malicious_server": True}
    files = provision(tmp_path / "pki", DEVICES)
    s = files["server"]
    setup, stores, _ = make_setup(
        tmp_path,
        _experiment(secure, privacy, rounds=1),
        devices=DEVICES,
        tokens_file=str(files["registry"]),
        tls_cert=str(s / "server.pem"),
        tls_key=str(s / "server.key"),
        client_ca=str(s / "ca.pem"),
        goal_count=DEVICES,
        over_selection=1.0,
        min_reports=5,
    )
    kits = device_folders(files["devices"], DEVICES)
    _, summary, _ = asyncio.run(run_system(setup, tmp_path / "state", stores, kits))
    (rec,) = records(tmp_path / "state", setup)
    assert summary["rounds_committed"] == 1 and rec["secagg_survivors"]["consistency_check"] == DEVICES
    assert rec["epsilon"] > 0
