"""ECDH PSI (hamrah.vertical.psi, X25519) between two parties in one process, in core-seconds.

Each party holds ``n`` ids, half of them shared. The parties run in threads over ``run_parties``,
each blinding in ``--workers`` processes (1: in its thread). Core-seconds are the CPU of this
process's threads plus that of its finished worker processes (``os.times``), both parties together:
what FATE's and SecretFlow's published wall times times their core counts measure. Each run is
appended to ``--out`` as one JSON line (peak memory of this process and of its largest worker too).

    python benchmarks/bench_psi.py --sizes 100000 1000000
    python benchmarks/bench_psi.py --sizes 10000000 --workers 2
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from pathlib import Path

import numpy as np

from hamrah.vertical import run_parties
from hamrah.vertical.psi import PSIConfig, intersect


def _cpu() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def run_once(n: int, workers: int = 1, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    pool = rng.choice(2**62, size=int(n * 1.5), replace=False).astype(np.int64)
    guest, host = pool[:n], pool[n // 2 : n // 2 + n]
    del pool
    config = PSIConfig(workers=workers)
    cpu, wall = _cpu(), time.perf_counter()
    results, stats = run_parties(
        {"guest": lambda ch: intersect(ch, guest, config), "host": lambda ch: intersect(ch, host, config)},
        timeout_s=3600,
    )
    cpu, wall = _cpu() - cpu, time.perf_counter() - wall
    assert len(results["guest"]) == n // 2 and np.array_equal(results["guest"], results["host"])
    return {
        "ids_per_party": n,
        "intersection": n // 2,
        "workers_per_party": workers,
        "cores": os.cpu_count(),
        "core_seconds": round(cpu, 2),
        "wall_seconds": round(wall, 2),
        "bytes_guest": stats["guest"].total_bytes,
        "messages_guest_sent": sum(stats["guest"].sent_messages.values()),
        "core_us_per_id_per_party": round(cpu / (2 * n) * 1e6, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "peak_rss_worker_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000])
    parser.add_argument("--workers", type=int, default=1, help="blinding processes per party")
    parser.add_argument("--out", default="benchmarks/results/psi.jsonl")
    args = parser.parse_args()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    for n in args.sizes:
        row = run_once(n, args.workers)
        print(row, flush=True)
        with open(args.out, "a") as f:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
