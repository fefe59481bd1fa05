"""The simulator's round loop before and after a change, interleaved in one sitting.

Times ``Simulator.run`` of a config (default: the 50-round MNIST 2NN workload of issue 11,
``configs/mnist_2nn_50.toml``) in a fresh process per run, alternating between a checkout of the
code before the change (``--before-src``, e.g. a ``git worktree`` of the older commit) and this one,
so both see the same load. Prints each pair and the per-round times; the final model's hash shows
whether the change kept the models bit for bit.

    git worktree add --detach ../before HEAD~1
    python benchmarks/bench_rounds_ab.py --before-src ../before/src --pairs 3
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_ONE_RUN = """
import hashlib, json, sys, time
from hamrah.experiments.config import load_config
from hamrah.experiments.runner import prepare
sim = prepare(load_config(sys.argv[1])).simulator()
t0 = time.perf_counter()
res = sim.run()
dt = time.perf_counter() - t0
digest = hashlib.sha256(b"".join(v.numpy().tobytes() for v in res.params.values())).hexdigest()[:16]
print(json.dumps({"seconds": dt, "rounds": sim.config.rounds, "model": digest}))
"""


def one_run(config: str, src: str | None) -> dict:
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = str(Path(src).resolve())
    out = subprocess.run([sys.executable, "-c", _ONE_RUN, config], env=env, cwd=ROOT, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="configs/mnist_2nn_50.toml")
    ap.add_argument("--before-src", required=True, help="the src folder of the code before the change")
    ap.add_argument("--pairs", type=int, default=3)
    args = ap.parse_args()
    for i in range(args.pairs):
        before, after = one_run(args.config, args.before_src), one_run(args.config, None)
        per = [1000 * r["seconds"] / r["rounds"] for r in (before, after)]
        print(
            f"pair {i + 1}: before {before['seconds']:.2f} s ({per[0]:.1f} ms/round), "
            f"after {after['seconds']:.2f} s ({per[1]:.1f} ms/round), "
            f"models {'equal' if before['model'] == after['model'] else 'DIFFER'}"
        )


if __name__ == "__main__":
    main()
