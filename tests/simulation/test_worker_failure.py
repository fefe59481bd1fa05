"""A worker process that dies is a clear error, not a hang: the classic case is a script without the
``if __name__ == "__main__":`` guard, which every spawned worker imports again and dies in."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    from hamrah.experiments.config import from_dict
    from hamrah.experiments.runner import prepare

    cfg = from_dict({
        "data": {"dataset": "DATASET", "num_clients": 4},
        "model": {"name": "logreg"},
        "algorithm": {"name": "fedprox", "client_fraction": 1.0, "local_epochs": 1, "batch_size": 10, "lr": 0.1},
        "run": {"rounds": 1, "workers": 2},
    })
    prepare(cfg).simulator().run()   # no __main__ guard: each spawned worker runs this again
    """
)


@pytest.mark.parametrize("dataset", ["synthetic_iid", "mnist"])
def test_a_script_without_the_main_guard_gets_an_error_not_a_hang(tmp_path, dataset):
    """On MNIST the workers' start payload (the clients' index arrays, 480 KB) passes the 64 KiB of a
    pipe: sent with the process's start arguments, the parent blocked for ever writing it to a child
    that had died (a lab cell sat at 0% CPU)."""
    script = tmp_path / "unguarded.py"
    script.write_text(SCRIPT.replace("DATASET", dataset))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=180)
    assert proc.returncode != 0
    assert "run.workers = 2: a worker process died" in proc.stderr
    assert 'if __name__ == "__main__":' in proc.stderr
