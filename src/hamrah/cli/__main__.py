"""``python -m hamrah.cli``."""

import sys

from hamrah.cli import main

sys.exit(main())
