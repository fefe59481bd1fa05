"""A worker process that dies is a clear error, not a hang: the classic case is a script without the
``if __name__ == "__main__":`` guard, which every spawned worker imports again and dies in."""

from __future__ import annotations

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    from hamrah.experiments.config import from_dict
    from hamrah.experiments.runner import prepare

    cfg = from_dict({
        "data": {"dataset": "synthetic_iid", "num_clients": 4},
        "model": {"name": "logreg"},
        "algorithm": {"name": "fedprox", "client_fraction": 1.0, "local_epochs": 1, "batch_size": 10, "lr": 0.1},
        "run": {"rounds": 1, "workers": 2},
    })
    prepare(cfg).simulator().run()   # no __main__ guard: each spawned worker runs this again
    """
)


def test_a_script_without_the_main_guard_gets_an_error_not_a_hang(tmp_path):
    script = tmp_path / "unguarded.py"
    script.write_text(SCRIPT)
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=180)
    assert proc.returncode != 0
    assert "run.workers = 2: a worker process died" in proc.stderr
    assert 'if __name__ == "__main__":' in proc.stderr
