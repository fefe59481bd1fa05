"""The one error tree of hamrah.

Every error a user can cause derives from :class:`HamrahError`; the CLI prints
its message (no traceback) and exits non-zero.

- ``HamrahError``: base class.
  - ``ConfigError``: a config key, type or value is wrong; names the key and what was expected.
  - ``DataError``: a data set is missing, corrupt or malformed; names the file and what to do.
  - ``NotEnoughClients``: a round could not gather the clients it needs.
  - ``ProtocolError``: a message broke the protocol (wrong round or task id, names, shapes, dtypes,
    non-finite values, sizes); names the field and what was expected.
  - ``TransportError``: the network failed (peer unreachable, stream cut).
  - ``AuthError``: a device or message could not be authenticated.
  - ``BudgetExhausted``: a privacy budget would be exceeded.
  - ``DropoutThresholdExceeded``: too few clients survived a secure-aggregation stage.
  - ``PartyFailed``: another party of a multi-party protocol (vertical FL) failed, went silent or
    went away; names the party.
"""

from __future__ import annotations


class HamrahError(Exception):
    """Base class of every error hamrah raises on purpose."""


class ConfigError(HamrahError, ValueError):
    """A configuration key, type or value is wrong."""


class DataError(HamrahError):
    """A data set is missing, corrupt or malformed."""


class NotEnoughClients(HamrahError):
    """A round could not gather the clients it needs."""


class ProtocolError(HamrahError):
    """A message broke the protocol: names the field and what was expected."""


class TransportError(HamrahError):
    """The network failed: a peer was unreachable or a stream was cut."""


class AuthError(HamrahError):
    """A device or message could not be authenticated."""


class BudgetExhausted(HamrahError):
    """Going on would exceed the privacy budget."""


class DropoutThresholdExceeded(HamrahError):
    """Fewer clients than the threshold survived a secure-aggregation stage."""


class PartyFailed(HamrahError):
    """Another party of a multi-party protocol failed, went silent or went away.

    Attributes:
        party: the name of the party at fault.
    """

    def __init__(self, party: str, message: str):
        super().__init__(f"party {party!r}: {message}")
        self.party = party


class PartyStopped(HamrahError):
    """Another party stopped on an error of its own (bad data, other settings) and will not go on.

    Only the kind of its error crosses the wire (its own log says why), never the message: that might
    quote its data.

    Attributes:
        party: the party that stopped. error: the kind of its error (``DataError``, ``ConfigError``, ...).
    """

    def __init__(self, party: str, error: str):
        super().__init__(f"party {party!r} stopped on an error of its own ({error}; its log says why)")
        self.party, self.error = party, error


class TrainingStopped(HamrahError):
    """Local training was asked to stop between two steps (a device lost eligibility, or its report
    would come after the server stopped waiting)."""


class WorkerFailed(HamrahError):
    """A worker process of the simulator died (killed, out of memory, or a script it could not import)."""
