"""A helper the protocol tests share: run the key rounds of a secure-aggregation round in process."""

from __future__ import annotations


def exchange_keys(server, clients) -> dict:
    """Rounds 0 and 1: every client advertises its keys, then sends its encrypted shares; return the
    server's share broadcasts (client id -> message)."""
    for c in clients:
        server.receive(c.advertise_keys().to_bytes())
    keys = server.close_advertise_keys()
    for c in clients:
        server.receive(c.share_keys(keys[c.client_id]).to_bytes())
    return server.close_share_keys()
