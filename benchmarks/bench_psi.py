"""ECDH PSI (hamrah.vertical.psi, X25519) between two parties in one process, in core-seconds.

Each party holds ``n`` ids, half of them shared. The parties run in threads over ``run_parties``;
``time.process_time`` counts the CPU of all threads, so the figure is core-seconds for both parties
together (what FATE's and SecretFlow's published wall times times their core counts measure).
Writes ``benchmarks/results/psi.json``.

    python benchmarks/bench_psi.py --sizes 100000 1000000
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from hamrah.vertical import run_parties
from hamrah.vertical.psi import intersect


def run_once(n: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    pool = rng.choice(2**62, size=int(n * 1.5), replace=False).astype(np.int64)
    guest, host = pool[:n], pool[n // 2 : n // 2 + n]
    cpu, wall = time.process_time(), time.perf_counter()
    results, stats = run_parties(
        {"guest": lambda ch: intersect(ch, guest), "host": lambda ch: intersect(ch, host)}, timeout_s=3600
    )
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    assert len(results["guest"]) == n // 2 and np.array_equal(results["guest"], results["host"])
    return {
        "ids_per_party": n,
        "intersection": n // 2,
        "core_seconds": round(cpu, 2),
        "wall_seconds": round(wall, 2),
        "bytes_guest": stats["guest"].total_bytes,
        "core_us_per_id_per_party": round(cpu / (2 * n) * 1e6, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000])
    parser.add_argument("--out", default="benchmarks/results/psi.json")
    args = parser.parse_args()
    rows = []
    for n in args.sizes:
        rows.append(run_once(n))
        print(rows[-1], flush=True)
    per_id = rows[-1]["core_seconds"] / rows[-1]["ids_per_party"]
    print(f"extrapolated 1e7 x 1e7: {per_id * 1e7:.0f} core-seconds (linear in n, from the largest run)")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(
        json.dumps({"runs": rows, "extrapolated_1e7_core_seconds": round(per_id * 1e7)}, indent=2)
    )


if __name__ == "__main__":
    main()
