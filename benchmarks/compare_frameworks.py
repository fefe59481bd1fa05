"""hamrah beside Flower, pfl-research and a plain PyTorch loop on one workload, all in the same run.

The workload (issue 11): MNIST 2NN, 100 IID clients, C = 0.1, E = 1, B = 10, lr = 0.1, 50 rounds, one
evaluation at the end. Each framework runs as its own process and is timed whole (interpreter start,
imports, data loading, training, the evaluation), in rounds: every repeat runs each framework once, in
the same order, so a burst of load from other jobs falls on all of them alike. The others' scripts are
in ``benchmarks/frameworks/`` and import nothing from hamrah; hamrah runs ``hamrah run
configs/mnist_2nn_50.toml --no-plot`` from this repo's venv.

The other frameworks live in a separate venv, outside the repo (they pin their own numpy, protobuf
and grpc; tests never import these scripts). Set it up once, offline from PyPI:

    python3.11 -m venv /work/fw-venv
    /work/fw-venv/bin/pip install torch==2.13.0      # the CPU build (on this machine: from its local file)
    /work/fw-venv/bin/pip install -r benchmarks/requirements-frameworks.txt

Then, from the repo root with the project's venv active:

    python benchmarks/compare_frameworks.py --repeats 2                # all four
    python benchmarks/compare_frameworks.py --only hamrah,plain --env OMP_WAIT_POLICY=PASSIVE   # an env for all

Every framework at its defaults is the fair comparison: PASSIVE slows all of them on 2 cores, the
others more than hamrah (docs/benchmarks.md, 2026-12-04).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FW = ROOT / "benchmarks" / "frameworks"


def commands(fw_python: str, out: Path) -> dict[str, list[str]]:
    """Return each framework's command line (run from the repo root)."""
    return {
        "hamrah": [
            sys.executable,
            "-m",
            "hamrah.cli",
            "run",
            "configs/mnist_2nn_50.toml",
            "--no-plot",
            "--quiet",
            "--overwrite",  # each repeat writes over the last
            "--out",
            str(out / "hamrah"),
        ],
        "plain": [fw_python, str(FW / "plain_torch.py")],
        "pfl": [fw_python, str(FW / "pfl_sim.py")],
        "flower": [fw_python, str(FW / "flower_sim.py")],
    }


def run_one(name: str, cmd: list[str], env: dict[str, str], out: Path) -> dict:
    """Run one framework's process; return its wall time and what it reported."""
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    (out / f"{name}.log").write_text(proc.stdout + proc.stderr)
    row: dict = {"name": name, "process_s": round(wall, 2), "rc": proc.returncode}
    if name == "hamrah" and proc.returncode == 0:
        summary = json.loads((out / "hamrah" / "summary.json").read_text())
        row.update(accuracy=summary["final_accuracy"], rounds_s=summary["wall_s"])
    else:
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith('{"framework"')]
        if lines:
            row.update(json.loads(lines[-1]))
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fw-python", default="/work/fw-venv/bin/python", help="python of the frameworks' venv")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--only", default="hamrah,plain,pfl,flower", help="comma-separated subset, in run order")
    p.add_argument("--env", action="append", default=[], help="KEY=VALUE set for every framework's process")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "frameworks.json"))
    args = p.parse_args()
    if not Path(args.fw_python).exists():
        sys.exit(f"--fw-python {args.fw_python}: not found; set up the frameworks' venv as this script's help says")
    logs = Path("/tmp") / f"hamrah-compare-{os.getpid()}"
    logs.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **dict(kv.split("=", 1) for kv in args.env)}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    cmds = commands(args.fw_python, logs)
    names = args.only.split(",")
    rows = []
    for rep in range(args.repeats):
        for name in names:
            load = os.getloadavg()[0]
            row = run_one(name, cmds[name], env, logs) | {"repeat": rep, "load_avg_1min_before": round(load, 2)}
            rows.append(row)
            print(json.dumps(row), flush=True)
            if row["rc"]:
                print(f"{name} failed (rc {row['rc']}): see {logs / (name + '.log')}", file=sys.stderr, flush=True)
    best = {
        n: min(r["process_s"] for r in rows if r["name"] == n and r["rc"] == 0)
        for n in names
        if any(r["name"] == n and r["rc"] == 0 for r in rows)
    }
    meta = {
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "env": args.env,
        "repeats": args.repeats,
        "logs": str(logs),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"meta": meta, "runs": rows, "best_process_s": best}, indent=2) + "\n")
    print("\n| framework | best process s | x hamrah |\n|---|---|---|")
    for n, s in best.items():
        print(f"| {n} | {s:.1f} | {s / best['hamrah']:.1f} |" if "hamrah" in best else f"| {n} | {s:.1f} | |")
    print(f"\nwrote {args.out}; logs in {logs}")


if __name__ == "__main__":
    main()
