"""``python -m hamrah.cli``."""

from hamrah.cli import entry

entry()
