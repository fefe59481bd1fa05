"""Vertical federated learning and federated transfer learning.

Parties hold the same samples (vertical) or few shared samples (transfer) with different features.
Each protocol is one function per role over a :class:`~hamrah.vertical.channel.Channel`; the same
functions run in one process (:func:`~hamrah.vertical.channel.run_parties`) and between real
parties over gRPC (``hamrah.parties``).
"""

from hamrah.vertical.channel import Channel, ChannelStats, LocalNetwork, run_parties
from hamrah.vertical.message import Envelope, decode, encode

_LOCAL = ("Trained", "train")  # hamrah.vertical.local, imported on first use (it reads tables: torch)


def __getattr__(name: str):
    if name in _LOCAL:
        import hamrah.vertical.local

        return getattr(hamrah.vertical.local, name)
    raise AttributeError(f"module 'hamrah.vertical' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_LOCAL])


__all__ = ["Channel", "ChannelStats", "Envelope", "LocalNetwork", "Trained", "decode", "encode", "run_parties", "train"]
