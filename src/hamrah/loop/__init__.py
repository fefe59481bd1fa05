"""The round loop every driver shares, without I/O: :class:`RoundLoop` (which round is due, how an
aggregate becomes the next model, when the run ends), :class:`RunPlan` (the ``[run]`` settings) and
:func:`drive`, which pumps the loop through a :class:`Runner` in-process (the simulator). The gRPC
server pumps the same loop from its commit step and round machine."""

from hamrah.loop.drive import Runner, drive
from hamrah.loop.plan import RunPlan
from hamrah.loop.state import AggregateRefused, Applied, Budget, End, RoundLoop

__all__ = ["AggregateRefused", "Applied", "Budget", "End", "RoundLoop", "RunPlan", "Runner", "drive"]
