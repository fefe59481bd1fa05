"""Device identity over real gRPC on 127.0.0.1: provisioned kits (mTLS + signed calls) run rounds; replayed,
unsigned, wrongly keyed and certificate-swapped calls are refused with UNAUTHENTICATED and counted; a server
without tokens completes rounds; a revoked device stops alone while its fleet goes on."""

from __future__ import annotations

import asyncio
import dataclasses

import grpc
from tests.system.harness import experiment, make_setup, run_system

from hamrah.transport.identity import DeviceKey, RequestSigner
from hamrah.transport.proto import fl_pb2 as pb
from hamrah.transport.proto import fl_pb2_grpc as pb_grpc
from hamrah.transport.provision import device_folders, provision
from hamrah.transport.security import channel_credentials


def _kit_setup(tmp_path, devices: int, **server):
    files = provision(tmp_path / "pki", devices + 2)
    s = files["server"]
    setup, stores, _ = make_setup(
        tmp_path,
        experiment(rounds=1),
        devices=devices,
        tokens_file=str(files["registry"]),
        tls_cert=str(s / "server.pem"),
        tls_key=str(s / "server.key"),
        client_ca=str(s / "ca.pem"),
        **server,
    )
    return setup, stores, device_folders(files["devices"], devices + 2)


def test_provisioned_devices_complete_a_round_over_mtls_with_signed_calls(tmp_path):
    setup, stores, kits = _kit_setup(tmp_path, 3, goal_count=3, over_selection=1.0, min_reports=3)
    server, summary, stats = asyncio.run(run_system(setup, tmp_path / "state", stores, kits[:3]))
    assert summary["rounds_committed"] == 1 and sum(s.reported for s in stats) == 3
    assert sum(server.service.tokens.refusals.values()) == 0


async def _status(call):
    try:
        await call
        return grpc.StatusCode.OK, ""
    except grpc.aio.AioRpcError as e:
        return e.code(), e.details()


def test_replayed_unsigned_wrong_key_and_swapped_certificate_calls_are_refused(tmp_path):
    """Each attack holds a valid token: only the identity checks stop it."""
    setup, stores, kits = _kit_setup(tmp_path, 2, goal_count=2, over_selection=1.0, min_reports=2)
    a, b = kits[2], kits[3]  # two provisioned devices outside the fleet
    seen = {}

    async def attacker(server, port):
        req = pb.CheckInRequest(
            population="default", device_id="mallory", state=pb.DeviceState(idle=False, charging=True, unmetered=True)
        )
        signer_a = RequestSigner(a.token, DeviceKey.load(a.signing_key), a.name)
        for kit, name in ((a, "as a"), (b, "as b")):
            creds = channel_credentials(kit.tls_ca, kit.tls_cert, kit.tls_key)
            async with grpc.aio.secure_channel(f"127.0.0.1:{port}", creds) as ch:
                stub = pb_grpc.FederatedLearningStub(ch)
                if name == "as a":
                    md = signer_a.metadata("CheckIn")
                    seen["honest"] = await _status(stub.CheckIn(req, metadata=md))
                    seen["replayed"] = await _status(stub.CheckIn(req, metadata=md))
                    seen["unsigned"] = await _status(
                        stub.CheckIn(req, metadata=RequestSigner(a.token, None, "x").metadata("CheckIn"))
                    )
                    wrong = RequestSigner(a.token, DeviceKey.load(b.signing_key), "x")
                    seen["wrong key"] = await _status(stub.CheckIn(req, metadata=wrong.metadata("CheckIn")))
                    seen["other method"] = await _status(stub.CheckIn(req, metadata=signer_a.metadata("Report")))
                else:  # a's token and key, over b's mTLS certificate
                    seen["swapped certificate"] = await _status(
                        stub.CheckIn(req, metadata=signer_a.metadata("CheckIn"))
                    )

    server, summary, _ = asyncio.run(run_system(setup, tmp_path / "state", stores, kits[:2], during=attacker))
    assert summary["rounds_committed"] == 1
    assert seen["honest"][0] == grpc.StatusCode.OK
    words = {
        "replayed": "replayed",
        "unsigned": "unsigned",
        "wrong key": "wrong key",
        "other method": "bad signature",
        "swapped certificate": "certificate",
    }
    for name, word in words.items():
        code, details = seen[name]
        assert code == grpc.StatusCode.UNAUTHENTICATED and word in details, (name, details)
    refusals = server.service.tokens.refusals
    assert refusals == {"replayed": 1, "unsigned": 1, "wrong key": 1, "bad signature": 1, "certificate mismatch": 1}


def test_a_server_without_tokens_completes_rounds(tmp_path):
    """On today's code CheckIn keyed a device by its name and later calls by its address: no round completed."""
    setup, stores, _ = make_setup(
        tmp_path, experiment(rounds=2), devices=5, goal_count=4, over_selection=1.0, min_reports=4
    )
    setup = dataclasses.replace(setup, server=dataclasses.replace(setup.server, tokens_file=None))
    # Devices retry for ever: the fleet still ends once one of them hears that training is over.
    server, summary, stats = asyncio.run(
        run_system(setup, tmp_path / "state", stores, [None] * 5, device_kw={"unreachable_after_s": None})
    )
    assert server.service.tokens is None
    assert summary["rounds_committed"] == 2
    assert stats is not None and sum(s.reported for s in stats) >= 8 and any(s.finished for s in stats)


def test_a_revoked_device_stops_alone_and_its_fleet_goes_on(tmp_path):
    """On today's code the revoked device's AuthError ended the whole fleet (``hamrah fleet`` exited)."""
    setup, stores, tokens = make_setup(
        tmp_path,
        experiment(rounds=2),
        devices=6,
        goal_count=4,
        over_selection=1.0,
        min_reports=4,
        revoked_file=str(tmp_path / "revoked.txt"),
    )
    (tmp_path / "revoked.txt").write_text(tokens[0] + "\n")
    server, summary, stats = asyncio.run(run_system(setup, tmp_path / "state", stores, tokens))
    assert summary["rounds_committed"] == 2
    assert stats is not None and len(stats) == 6
    assert (
        stats[0].reported == 0 and stats[0].messages[-1].startswith("stopped: ") and "revoked" in stats[0].messages[-1]
    )
    assert sum(s.reported for s in stats[1:]) >= 8
    assert server.service.tokens.refusals["revoked"] >= 1
