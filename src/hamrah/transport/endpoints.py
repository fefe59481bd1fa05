"""Peers' addresses, and why a connection to one failed: a ``host:port`` check and telling a TLS
failure (which waiting does not mend) from a peer that is not reachable yet, by gRPC's status details."""

from __future__ import annotations

# words in gRPC's details of a connection that failed in TLS (another CA, a certificate naming another
# peer, a file that is not a certificate, TLS against a plaintext port): "Tls handshake failed
# (TSI_PROTOCOL_FAILURE): SSL_ERROR_SSL: ...", "Custom verification check failed with error:
# UNAUTHENTICATED: Hostname Verification Check failed". Not "Handshake read failed (recvmsg:Connection
# reset by peer)": a peer that went away or restarted mid-handshake, which waiting does mend.
TLS_FAILURES = ("tls handshake failed", "ssl handshake failed", "ssl_error_ssl", "certificate", "verification check")


def is_address(value: object) -> bool:
    """True for ``"host:port"`` with a port in 1..65535 (an IPv6 host in brackets)."""
    if not isinstance(value, str):
        return False
    host, _, port = value.rpartition(":")
    return bool(host) and port.isdigit() and 1 <= int(port) <= 65535


def tls_failure(details: str | None) -> bool:
    """True when gRPC's details of an UNAVAILABLE call say the TLS handshake failed."""
    return any(w in (details or "").lower() for w in TLS_FAILURES)


__all__ = ["TLS_FAILURES", "is_address", "tls_failure"]
