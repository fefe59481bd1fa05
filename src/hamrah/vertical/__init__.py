"""Vertical federated learning and federated transfer learning.

Parties hold the same samples (vertical) or few shared samples (transfer) with different features.
Each protocol is one function per role over a :class:`~hamrah.vertical.channel.Channel`; the same
functions run in one process (:func:`~hamrah.vertical.channel.run_parties`) and between real
parties over gRPC (``hamrah.parties``).
"""

from hamrah.vertical.channel import Channel, ChannelStats, LocalNetwork, run_parties
from hamrah.vertical.message import Envelope, decode, encode

__all__ = ["Channel", "ChannelStats", "Envelope", "LocalNetwork", "decode", "encode", "run_parties"]
