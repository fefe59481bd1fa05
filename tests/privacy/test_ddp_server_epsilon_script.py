"""``scripts/ddp_server_epsilon.py`` runs and prints the numbers docs/distributed_dp.md and docs/dp.md quote.

It passed the ``[secure_aggregation]`` settings as a dict after ``distributed_stage`` came to take a
``SecureSpec``, and stopped with an AttributeError traceback; nothing ran it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_server_epsilon_script_prints_the_documented_epsilons():
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "ddp_server_epsilon.py")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "q = 0.5: epsilon 4.66 after 20 rounds (z = 4.25, n_min = 40, delta = 1e-05)",
        "q = 1.0: epsilon 5.02 after 20 rounds (z = 4.25, n_min = 40, delta = 1e-05)",
        "the server (q = 1) needs z = 4.55 for epsilon 4.66",
    ]
