"""A run imports only what it uses (issue 11): the pipeline's stages come from a lazy registry, so a simulator
run without DP or HE imports neither dp_accounting nor tenseal nor phe; one with DP imports dp_accounting.
Each check runs in a fresh interpreter (sys.modules of this test process is shared with every other test).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

SCRIPT = r"""
import json, sys
import numpy as np, torch
from torch import nn
from hamrah.algorithms import build
from hamrah.data import ArrayData, Dataset, FederatedDataset
from hamrah.pipeline import resolve_pipeline
from hamrah.simulation import SimulationConfig, Simulator, seeded

class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)
    def forward(self, x):
        return self.fc(x.reshape(len(x), -1))

rng = np.random.default_rng(0)
x = torch.from_numpy(rng.normal(size=(60, 4)).astype(np.float32))
y = torch.from_numpy(rng.integers(0, 3, 60))
ds = Dataset("tiny", ArrayData(x[:40], y[:40]), ArrayData(x[40:], y[40:]), num_classes=3)
fed = FederatedDataset(ds, tuple(np.split(np.arange(40), 4)), "hand")
sections = json.loads(sys.argv[1])
spec = resolve_pipeline(sections.get("compression"), sections.get("privacy"), 4, 2, 1)
sim = Simulator(seeded(Tiny, 0), fed, build("fedavg", 0.5, lr=0.1, batch_size=5), SimulationConfig(rounds=1, workers=1),
                pipeline=spec)
assert sim.run().history[-1].clients == 2
print(json.dumps(sorted(m for m in ("dp_accounting", "tenseal", "phe", "matplotlib") if m in sys.modules)))
"""


def _imported(sections: dict) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, json.dumps(sections)], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("sections", [{}, {"compression": {"codec": "topk", "fraction": 0.5}}])
def test_a_run_without_dp_or_he_imports_none_of_their_libraries(sections):
    assert _imported(sections) == []


def test_a_dp_run_imports_the_accountant_and_still_no_he_library():
    dp = {"privacy": {"mode": "central", "clip": 1.0, "noise_multiplier": 1.0, "sampling": "fixed"}}
    assert _imported(dp) == ["dp_accounting"]
