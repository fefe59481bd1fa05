"""In-process or worker processes: which is faster for each built-in model trained one client at a time.

Each case runs ``hamrah run`` twice per repeat, ``run.workers = 1`` and ``run.workers = 2``, alternating, as
whole processes (so the pool's start-up counts, as it does for a user); the JSON keeps the process time and
the time in rounds. ``hamrah.simulation.placement`` picks workers by default only where they won here
(convolutional models; ``docs/benchmarks.md``, "Worker processes or not").

    python benchmarks/bench_workers.py                  # -> benchmarks/results/workers.json
    python benchmarks/bench_workers.py --repeats 2 --cases logreg_scaffold,cnn
    python benchmarks/bench_workers.py --cases cnn --ray --out benchmarks/results/workers_ray.json

``--ray`` adds a third run per case: ``run.backend = "ray"`` with two actors on a local Ray instance
(started and stopped by the run: its start-up counts too).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MNIST = '[data]\ndataset = "mnist"\npartition = "iid"\nnum_clients = 100\n'
CASES = {  # name -> (config without [run], rounds): the paper's MNIST settings, C = 0.1, E = 1, B = 10
    "logreg_scaffold": (MNIST + '[model]\nname = "logreg"\n[algorithm]\nname = "scaffold"\n', 20),
    "2nn_scaffold": (MNIST + '[model]\nname = "2nn"\n[algorithm]\nname = "scaffold"\n', 20),
    "cnn": (MNIST + '[model]\nname = "cnn"\n[algorithm]\nname = "fedavg"\n', 5),
    "char_lstm": ('[data]\ndataset = "shakespeare"\n[model]\nname = "char_lstm"\n[algorithm]\nname = "fedavg"\n', 9),
}
ALGORITHM = "client_fraction = {c}\nlocal_epochs = 1\nbatch_size = 10\nlr = {lr}\n"


def one_run(case: str, workers: int, folder: Path, backend: str = "local") -> dict:
    """Run ``case`` with ``workers`` of ``backend`` as a whole ``hamrah run`` process; return its times."""
    text, rounds = CASES[case]
    lstm = case == "char_lstm"
    text += ALGORITHM.format(c=0.02 if lstm else 0.1, lr=1.47 if lstm else 0.1)
    text += f"[run]\nrounds = {rounds}\neval_every = {rounds}\nseed = 0\nworkers = {workers}\nbackend = '{backend}'\n"
    cfg, out = folder / f"{case}.toml", folder / "out"
    cfg.write_text(text)
    cmd = [
        sys.executable,
        "-m",
        "hamrah.cli",
        "run",
        str(cfg),
        "--no-plot",
        "--quiet",
        "--overwrite",
        "--out",
        str(out),
    ]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    summary = json.loads((out / "summary.json").read_text())
    return {
        "case": case,
        "workers": workers,
        "backend": backend,
        "rounds": rounds,
        "process_s": round(wall, 2),
        "rounds_s": summary["wall_s"],
        "accuracy": summary["final_accuracy"],
        "load_avg_1min_before": round(os.getloadavg()[0], 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, of {', '.join(CASES)}")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--ray", action="store_true", help="also run two Ray actors (run.backend = 'ray')")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "workers.json"))
    args = ap.parse_args()
    unknown = [c for c in args.cases.split(",") if c not in CASES]
    if unknown:
        raise SystemExit(f"unknown cases {unknown}: expected some of {', '.join(CASES)}")
    settings = [(1, "local"), (2, "local")] + ([(2, "ray")] if args.ray else [])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.repeats):
            for case in args.cases.split(","):
                for workers, backend in settings:
                    rows.append(one_run(case, workers, Path(tmp), backend) | {"repeat": rep})
                    print(json.dumps(rows[-1]), flush=True)
    heads = [f"{'ray, ' if b == 'ray' else ''}workers = {w}: process s (in rounds)" for w, b in settings]
    print(f"\n| case | rounds | {' | '.join(heads)} |")
    print("|---|---:|" + "---:|" * len(settings))
    for case in args.cases.split(","):
        cells = [
            ", ".join(
                f"{r['process_s']:.1f} ({r['rounds_s']:.1f})"
                for r in rows
                if r["case"] == case and (r["workers"], r["backend"]) == (w, b)
            )
            for w, b in settings
        ]
        print(f"| {case} | {CASES[case][1]} | {' | '.join(cells)} |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"runs": rows}, indent=2) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
