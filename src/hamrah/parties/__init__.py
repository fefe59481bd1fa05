"""Real vertical-FL parties: each its own process, over gRPC with mutual TLS (``hamrah party``).

- :mod:`hamrah.parties.channel`: the gRPC :class:`~hamrah.vertical.channel.Channel` and the party's server;
- :mod:`hamrah.parties.config`: one TOML per party; :mod:`hamrah.parties.tls`: certificates for a group;
- :mod:`hamrah.parties.runner`: run a role with checkpoints per epoch and resumption after a peer goes away.
"""

from hamrah.parties.channel import GrpcChannel, PartyServer, TLSFiles
from hamrah.parties.config import PartyConfig, load_party_config
from hamrah.parties.runner import load_checkpoints, run_party
from hamrah.parties.tls import make_party_tls

__all__ = [
    "GrpcChannel",
    "PartyConfig",
    "PartyServer",
    "TLSFiles",
    "load_checkpoints",
    "load_party_config",
    "make_party_tls",
    "run_party",
]
