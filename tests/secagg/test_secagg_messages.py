"""The wire codec round-trips exactly, and malformed, duplicate or out-of-order messages raise
ProtocolError (never another exception); tampered share ciphertexts are refused by the client."""

from __future__ import annotations

import numpy as np
import pytest

from hamrah.core.errors import AuthError, DropoutThresholdExceeded, ProtocolError
from hamrah.secagg import (
    AdvertiseKeys,
    DeterministicRandom,
    KeysBroadcast,
    MaskedInput,
    PeerKeys,
    SecAggClient,
    SecAggConfig,
    SecAggServer,
    ShareKeys,
    SharesBroadcast,
    UnmaskRequest,
    UnmaskShares,
    crypto,
    decode,
)
from hamrah.secagg.messages import CIPHERTEXT_BYTES

K32 = bytes(range(32))
SAMPLES = [
    AdvertiseKeys(3, 1, K32, K32[::-1]),
    KeysBroadcast(3, 1, (PeerKeys(0, K32, K32[::-1]), PeerKeys(2, K32[::-1], K32))),
    ShareKeys(3, 1, ((0, b"a" * CIPHERTEXT_BYTES), (2, b"b" * CIPHERTEXT_BYTES))),
    SharesBroadcast(3, 1, ((0, b"c" * CIPHERTEXT_BYTES),)),
    MaskedInput(3, 1, 12, 5, b"\x01" * 8),
    MaskedInput(3, 1, 12, 5, b"\x01" * 8, (0, 2, 7)),
    UnmaskRequest(3, 1, (0, 1, 2)),
    UnmaskShares(3, 1, ((0, 5), (1, 2**256)), ((2, 7),)),
]


@pytest.mark.parametrize("message", SAMPLES, ids=lambda m: type(m).__name__)
def test_round_trip_and_exact_size(message):
    wire = message.to_bytes()
    assert len(wire) == message.nbytes
    assert type(message).from_bytes(wire) == message == decode(wire)


@pytest.mark.parametrize("message", SAMPLES, ids=lambda m: type(m).__name__)
def test_truncated_or_padded_bytes_raise_protocol_error(message):
    wire = message.to_bytes()
    for cut in range(len(wire)):
        with pytest.raises(ProtocolError):
            decode(wire[:cut])
    with pytest.raises(ProtocolError, match="trailing"):
        decode(wire + b"\0")


def test_bad_header_fields_raise_protocol_error():
    wire = bytearray(SAMPLES[0].to_bytes())
    for pos, value, match in ((0, ord("X"), "magic"), (2, 9, "version 9"), (3, 99, "unknown message kind 99")):
        bad = bytearray(wire)
        bad[pos] = value
        with pytest.raises(ProtocolError, match=match):
            decode(bytes(bad))
    with pytest.raises(ProtocolError, match="expected a ShareKeys message, got AdvertiseKeys"):
        ShareKeys.from_bytes(bytes(wire))
    with pytest.raises(ProtocolError, match="must be bytes"):
        decode("not bytes")


def test_field_values_are_checked():
    dup = KeysBroadcast(0, 1, (PeerKeys(0, K32, K32), PeerKeys(0, K32, K32))).to_bytes()
    with pytest.raises(ProtocolError, match="lists a client id twice"):
        decode(dup)
    wire = UnmaskShares(0, 1, ((0, 0),), ()).to_bytes()  # ... share (33 bytes), then 4 bytes: no key shares
    too_big = wire[:-37] + b"\xff" * 33 + wire[-4:]
    with pytest.raises(ProtocolError, match="not a field element"):
        decode(too_big)
    with pytest.raises(ProtocolError, match="ring_bits"):
        decode(MaskedInput(0, 1, 65, 0, b"").to_bytes())
    with pytest.raises(ProtocolError, match="rejected senders lists a client id twice"):
        decode(MaskedInput(0, 1, 8, 1, b"\0", (2, 2)).to_bytes())


def test_random_garbage_never_crashes():
    rand = DeterministicRandom(9)
    for i in range(300):
        blob = rand(i % 120)
        if i % 3 == 0:  # a valid header makes the body parser work
            blob = SAMPLES[i % len(SAMPLES)].to_bytes()[:16] + blob
        try:
            decode(blob)
        except ProtocolError:
            pass


def _started(n=4, t=None):
    config = SecAggConfig(num_clients=n, vector_length=5, threshold=t)
    server = SecAggServer(config, round_id=7)
    clients = [SecAggClient(u, config, round_id=7, randbytes=DeterministicRandom(u)) for u in range(n)]
    return config, server, clients


def test_server_refuses_duplicates_out_of_order_and_strangers():
    _, server, clients = _started()
    first = clients[0].advertise_keys()
    server.receive(first)
    with pytest.raises(ProtocolError, match="second AdvertiseKeys"):
        server.receive(first)
    with pytest.raises(ProtocolError, match="got MaskedInput while the server is at stage 'advertise_keys'"):
        server.receive(MaskedInput(7, 1, 18, 5, bytes(12)))
    with pytest.raises(ProtocolError, match="round 8, this is round 7"):
        server.receive(AdvertiseKeys(8, 1, K32, K32[::-1]))
    with pytest.raises(ProtocolError, match="client 9 is not a survivor"):
        server.receive(AdvertiseKeys(7, 9, K32, K32[::-1]))
    with pytest.raises(ProtocolError, match="magic"):
        server.receive(b"garbage bytes that are long enough")
    with pytest.raises(ProtocolError, match="close_share_keys called while the server is at stage 'advertise_keys'"):
        server.close_share_keys()


def test_server_refuses_wrong_recipients_and_late_joiners():
    _, server, clients = _started()
    for c in clients[:3]:  # client 3 never advertises
        server.receive(c.advertise_keys())
    keys = server.close_advertise_keys()
    assert set(keys) == {0, 1, 2}
    reply = clients[0].share_keys(keys[0])
    with pytest.raises(
        ProtocolError, match="ciphertexts for \\[1\\], expected one for each neighbour in U1: \\[1, 2\\]"
    ):
        server.receive(ShareKeys(7, 0, reply.ciphertexts[:1]))
    with pytest.raises(ProtocolError, match="client 3 is not a survivor"):
        server.receive(ShareKeys(7, 3, ()))


def test_server_refuses_wrong_vector_length():
    config, server, clients = _started()
    for c in clients:
        server.receive(c.advertise_keys())
    keys = server.close_advertise_keys()
    for c in clients:
        server.receive(c.share_keys(keys[c.client_id]))
    server.close_share_keys()
    with pytest.raises(ProtocolError, match="4 18-bit values, expected 5 18-bit values"):
        server.receive(MaskedInput(7, 0, config.ring_bits, 4, bytes(9)))


def test_client_refuses_out_of_order_calls_and_foreign_messages():
    _, server, clients = _started()
    with pytest.raises(ProtocolError, match="expected KeysBroadcast"):
        clients[0].share_keys(SharesBroadcast(7, 0, ()))
    for c in clients:
        server.receive(c.advertise_keys())
    keys = server.close_advertise_keys()
    with pytest.raises(ProtocolError, match="message for client 1 in round 7, expected client 0"):
        clients[0].share_keys(keys[1])
    with pytest.raises(ProtocolError, match="advertise_keys called out of order"):
        clients[1].advertise_keys()
    with pytest.raises(ProtocolError, match="own neighbour"):
        clients[2].share_keys(KeysBroadcast(7, 2, (PeerKeys(2, K32, K32[::-1]),)))


def test_client_aborts_below_threshold():
    _, server, clients = _started(n=4, t=4)
    for c in clients[:3]:
        server.receive(c.advertise_keys())
    clients[3].advertise_keys()
    with pytest.raises(DropoutThresholdExceeded, match="stage 'advertise_keys': 3 of 4 clients survived"):
        server.close_advertise_keys()
    lonely = KeysBroadcast(7, 0, (PeerKeys(1, K32, K32[::-1]),))
    with pytest.raises(DropoutThresholdExceeded, match="client 0 aborts at stage 'share_keys': 2 holders"):
        clients[0].share_keys(lonely)


def test_tampered_share_ciphertext_is_rejected_by_its_receiver():
    """A ciphertext that fails authentication does not abort its receiver: it leaves the sender out of its
    masks and names it in its masked input's rejected senders (the server then leaves the sender out)."""
    _, server, clients = _started()
    for c in clients:
        server.receive(c.advertise_keys())
    keys = server.close_advertise_keys()
    for c in clients:
        server.receive(c.share_keys(keys[c.client_id]))
    shares = server.close_share_keys()
    sender, ct = shares[2].ciphertexts[0]
    flipped = bytes([ct[0] ^ 0x80]) + ct[1:]
    tampered = SharesBroadcast(7, 2, ((sender, flipped),) + shares[2].ciphertexts[1:])
    with pytest.raises(AuthError, match=f"from client {sender} to client 2 failed authentication"):
        crypto.open_sealed(clients[2]._enc_keys[sender], sender, 2, 7, flipped)
    assert clients[2].masked_input(tampered, np.zeros(5)).rejected == (sender,)
    # A ciphertext meant for another client is rejected the same way.
    swapped = SharesBroadcast(
        7, 3, ((shares[2].ciphertexts[0][0], shares[2].ciphertexts[0][1]),) + shares[3].ciphertexts[1:]
    )
    assert clients[3].masked_input(swapped, np.zeros(5)).rejected == (shares[2].ciphertexts[0][0],)
    assert clients[0].masked_input(shares[0], np.zeros(5)).rejected == ()


def test_server_refuses_a_rejected_sender_that_was_not_forwarded():
    config, server, clients = _started(n=4)
    for c in clients[:3]:
        server.receive(c.advertise_keys())
    keys = server.close_advertise_keys()
    for c in clients[:3]:
        server.receive(c.share_keys(keys[c.client_id]))
    server.close_share_keys()
    packed = bytes((5 * config.ring_bits + 7) // 8)
    for bad, who in (((3,), "\\[3\\]"), ((0,), "\\[0\\]")):  # 3 never shared keys; 0 is the client itself
        with pytest.raises(ProtocolError, match=f"client 0: rejects the shares of {who}, which were not sent to it"):
            server.receive(MaskedInput(7, 0, config.ring_bits, 5, packed, bad))
    server.receive(MaskedInput(7, 0, config.ring_bits, 5, packed, (1, 2)))
    assert server.rejected == {0: (1, 2)}


def test_client_refuses_bad_inputs_and_non_survivor_requests():
    _, server, clients = _started()
    for c in clients:
        server.receive(c.advertise_keys())
    keys = server.close_advertise_keys()
    for c in clients:
        server.receive(c.share_keys(keys[c.client_id]))
    shares = server.close_share_keys()
    with pytest.raises(ProtocolError, match=r"shape \(4,\), expected \(5,\)"):
        clients[0].masked_input(shares[0], np.zeros(4))
    with pytest.raises(ProtocolError, match="finite"):
        clients[1].masked_input(shares[1], np.array([0, 0, np.nan, 0, 0]))
    clients[2].masked_input(shares[2], np.zeros(5))
    with pytest.raises(ProtocolError, match="not listed among the survivors"):
        clients[2].unmask(UnmaskRequest(7, 2, (0, 1, 3)))
