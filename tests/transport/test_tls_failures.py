"""A TLS failure (waiting does not mend it) told apart from a peer that went away mid-handshake, on real
gRPC connections."""

from __future__ import annotations

import socket
import threading
from concurrent import futures

import grpc
import pytest

from hamrah.transport.certs import generate_tls
from hamrah.transport.endpoints import tls_failure
from hamrah.transport.proto import fl_pb2 as pb
from hamrah.transport.proto import fl_pb2_grpc as pb_grpc
from hamrah.transport.security import channel_credentials, server_credentials


def _details(port: int, creds: grpc.ChannelCredentials | None) -> str:
    target = f"127.0.0.1:{port}"
    channel = grpc.secure_channel(target, creds) if creds else grpc.insecure_channel(target)
    with channel, pytest.raises(grpc.RpcError) as e:
        pb_grpc.FederatedLearningStub(channel).CheckIn(pb.CheckInRequest(), timeout=5)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE  # what the device and the parties check
    return e.value.details()


@pytest.fixture
def servers(tmp_path):
    tls = generate_tls(tmp_path / "a")
    started = []
    ports = {}
    for name, creds in (("tls", server_credentials(tls["server"], tls["server_key"])), ("plain", None)):
        s = grpc.server(futures.ThreadPoolExecutor(1))
        pb_grpc.add_FederatedLearningServicer_to_server(pb_grpc.FederatedLearningServicer(), s)
        ports[name] = s.add_secure_port("127.0.0.1:0", creds) if creds else s.add_insecure_port("127.0.0.1:0")
        s.start()
        started.append(s)
    yield ports, tmp_path
    for s in started:
        s.stop(None)


def test_another_ca_and_tls_against_a_plaintext_port_are_tls_failures(servers):
    ports, tmp = servers
    other = generate_tls(tmp / "b")
    assert tls_failure(_details(ports["tls"], channel_credentials(other["ca"])))  # the server's CA is not trusted
    assert tls_failure(_details(ports["plain"], channel_credentials(other["ca"])))


def test_a_peer_that_drops_the_connection_mid_handshake_is_not_a_tls_failure(tmp_path):
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def drop_every_handshake():
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            conn.recv(16)  # the start of the ClientHello, then the peer goes away (a restarting server)
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            conn.close()

    threading.Thread(target=drop_every_handshake, daemon=True).start()
    try:
        details = _details(port, channel_credentials(generate_tls(tmp_path / "c")["ca"]))
    finally:
        listener.close()
    assert "andshake" in details and not tls_failure(details), details  # retried, not given up on
