"""The one error tree of hamrah.

Every error a user can cause derives from :class:`HamrahError`; the CLI prints
its message (no traceback) and exits non-zero.

- ``HamrahError``: base class.
  - ``ConfigError``: a config key, type or value is wrong; names the key and what was expected.
  - ``DataError``: a data set is missing, corrupt or malformed; names the file and what to do.
  - ``NotEnoughClients``: a round could not gather the clients it needs.
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
