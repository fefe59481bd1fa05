"""Secure aggregation cost against the number of clients n and the vector length m.

For each (variant, n, m) one round of SecAgg (Bonawitz et al. 2017, CCS) or SecAgg+ (Bell et al.
2020, CCS) runs through ``run_secure_aggregation`` in one process, every message through its wire
form. Reported: client seconds (mean per client), server seconds, bytes each way, the expansion
factor (bytes a client sends / the same vector sent in the clear as b-bit integers, the paper's
measure, and as float32), and the same-run plaintext baseline: summing the n vectors in numpy at
the server, serialising one float32 vector at a client. A second table gives our exact wire sizes
at the paper's own settings (no run needed: every message has an exact size).

    python benchmarks/bench_secagg.py                                    # the committed subset
    python benchmarks/bench_secagg.py --n 100,500,1000 --m 1e4,1e5,1e6 --variant secagg+
    python benchmarks/bench_secagg.py --n 100 --m 1e4 --variant secagg --dropout 0.1 --out /tmp/x.json
    python benchmarks/bench_secagg.py --n 1000 --m 1e4 --variant secagg --clock cpu   # CPU seconds, not wall

``--clock cpu`` times each party in CPU seconds of this process (``time.process_time``), which other
jobs on a shared machine do not inflate; ``wall`` (the default) is ``time.perf_counter``.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

from hamrah.secagg import SecAggConfig, random_dropouts, run_secure_aggregation, secaggplus_degree
from hamrah.secagg.messages import CIPHERTEXT_BYTES
from hamrah.secagg.ring import packed_size
from hamrah.secagg.shamir import SHARE_BYTES

DEFAULT_GRID = [  # (variant, n, m): about 6-8 minutes on the shared 2-core machine
    ("secagg", 100, 10_000),
    ("secagg", 100, 100_000),
    ("secagg", 100, 1_000_000),
    ("secagg", 500, 10_000),
    ("secagg+", 100, 10_000),
    ("secagg+", 100, 100_000),
    ("secagg+", 100, 1_000_000),
    ("secagg+", 500, 10_000),
    ("secagg+", 500, 100_000),
    ("secagg+", 1000, 10_000),
    ("secagg+", 1000, 100_000),
]


class CycledInputs:
    """n client vectors without n copies in memory: 8 distinct float vectors, reused in turn."""

    def __init__(self, n: int, m: int, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.n, self.pool = n, [rng.uniform(-1, 1, m).astype(np.float32) for _ in range(min(n, 8))]

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, u: int) -> np.ndarray:
        return self.pool[u % len(self.pool)]


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
clock = time.perf_counter


def plaintext_baseline(inputs: CycledInputs, repeats: int = 3) -> tuple[float, float]:
    """Return the best of ``repeats``: (server seconds to sum the n vectors, mean client seconds to serialise one)."""
    runs = [_plaintext_once(inputs) for _ in range(repeats)]
    return min(r[0] for r in runs), min(r[1] for r in runs)


def _plaintext_once(inputs: CycledInputs) -> tuple[float, float]:
    start = clock()
    total = np.zeros(len(inputs[0]), dtype=np.float64)
    for u in range(len(inputs)):
        total += inputs[u]
    server = clock() - start
    start = clock()
    for u in range(len(inputs)):
        inputs[u].astype("<f4").tobytes()
    return server, (clock() - start) / len(inputs)


def make_config(variant: str, n: int, m: int, input_bits: int) -> SecAggConfig:
    neighbours = None if variant == "secagg" else secaggplus_degree(n)
    return SecAggConfig(num_clients=n, vector_length=m, input_bits=input_bits, neighbours=neighbours)


def run_one(variant: str, n: int, m: int, input_bits: int, dropout: float, seed: int) -> dict:
    config = make_config(variant, n, m, input_bits)
    inputs = CycledInputs(n, m, seed)
    plain_server, plain_client = plaintext_baseline(inputs)
    fractions = {"masked_input": dropout} if dropout else {}
    dropouts = random_dropouts(n, fractions, np.random.default_rng(seed))
    start = time.perf_counter()
    run = run_secure_aggregation(inputs, config, dropouts, seed=seed, clock=clock)
    wall = time.perf_counter() - start
    contributors = list(run.result.contributors)
    err = (
        float(np.abs(run.sum - np.sum([inputs[u].astype(np.float64) for u in contributors], axis=0)).max())
        if len(contributors) <= 64
        else None
    )
    active = [u for u in range(n) if run.client_bytes_sent[u] > 0]
    sent = float(np.mean(run.client_bytes_sent[contributors]))
    client_s = float(np.mean(run.client_seconds[contributors]))
    return {
        "variant": variant,
        "n": n,
        "m": m,
        "input_bits": input_bits,
        "ring_bits": config.ring_bits,
        "neighbours": config.neighbours,
        "threshold": config.threshold,
        "dropout_at_masked_input": dropout,
        "contributors": len(contributors),
        "active_clients": len(active),
        "wall_s": wall,
        "client_s_mean": client_s,
        "server_s": run.server_seconds,
        "plain_client_s": plain_client,
        "plain_server_s": plain_server,
        "client_ratio": client_s / plain_client,
        "server_ratio": run.server_seconds / plain_server,
        "client_bytes_sent_mean": sent,
        "client_bytes_received_mean": float(np.mean(run.client_bytes_received[contributors])),
        "server_bytes_sent": run.server_bytes_sent,
        "server_bytes_received": run.server_bytes_received,
        "expansion_vs_bbit": sent / (m * input_bits / 8),
        "expansion_vs_float32": sent / (4 * m),
        "max_abs_error": err,
        "error_bound": len(contributors) * config.step / 2,
    }


def wire_sizes(n: int, m: int, input_bits: int) -> dict:
    """Exact bytes one full-SecAgg client sends and receives with no drop-outs (from the codec's formats)."""
    ring = input_bits + int(np.ceil(np.log2(n)))
    header = 16
    sent = (
        (header + 64)
        + (header + 4 + (n - 1) * (4 + CIPHERTEXT_BYTES))
        + (header + 5 + packed_size(m, ring))
        + (header + 8 + n * (4 + SHARE_BYTES))
    )
    received = (header + 4 + (n - 1) * 68) + (header + 4 + (n - 1) * (4 + CIPHERTEXT_BYTES)) + (header + 4 + 4 * n)
    plain = m * input_bits / 8
    return {
        "n": n,
        "m": m,
        "input_bits": input_bits,
        "ring_bits": ring,
        "sent": sent,
        "received": received,
        "expansion_sent": sent / plain,
        "expansion_sent_and_received": (sent + received) / plain,
    }


PAPER = [  # Bonawitz et al. 2017, abstract and Section 7: expansion over sending 16-bit data in the clear
    {"n": 2**10, "m": 2**20, "input_bits": 16, "paper_expansion": 1.73},
    {"n": 2**14, "m": 2**24, "input_bits": 16, "paper_expansion": 1.98},
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", help="comma-separated client counts (with --m and --variant replaces the default grid)")
    ap.add_argument("--m", help="comma-separated vector lengths, e.g. 1e4,1e5")
    ap.add_argument(
        "--variant",
        default="auto",
        choices=["auto", "secagg", "secagg+", "both"],
        help="auto: full SecAgg for n <= 100, SecAgg+ above",
    )
    ap.add_argument("--input-bits", type=int, default=16)
    ap.add_argument("--dropout", type=float, default=0.0, help="fraction dropped after sharing keys")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--clock", default="wall", choices=sorted(CLOCKS), help="wall: perf_counter; cpu: process_time")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "secagg.json"))
    args = ap.parse_args()
    global clock
    clock = CLOCKS[args.clock]
    grid = DEFAULT_GRID
    if args.n or args.m:
        ns = [int(float(x)) for x in (args.n or "100").split(",")]
        ms = [int(float(x)) for x in (args.m or "1e4").split(",")]
        variants = {"auto": None, "both": ["secagg", "secagg+"]}.get(args.variant, [args.variant])
        grid = [(v, n, m) for n in ns for m in ms for v in (variants or ["secagg" if n <= 100 else "secagg+"])]
    rows = []
    for variant, n, m in grid:
        row = run_one(variant, n, m, args.input_bits, args.dropout, args.seed)
        rows.append(row)
        print(
            f"{variant:8s} n={n:5d} m={m:8d} k={row['neighbours']} client {row['client_s_mean']:.3f}s "
            f"(x{row['client_ratio']:.0f}) server {row['server_s']:.2f}s (x{row['server_ratio']:.0f}) "
            f"sent/client {row['client_bytes_sent_mean'] / 1e6:.3f} MB expansion {row['expansion_vs_bbit']:.3f} "
            f"wall {row['wall_s']:.1f}s",
            flush=True,
        )
    paper = [{**p, **wire_sizes(p["n"], p["m"], p["input_bits"])} for p in PAPER]
    for p in paper:
        print(
            f"paper setting n={p['n']} m={p['m']}: ours {p['expansion_sent']:.3f}x sent "
            f"({p['expansion_sent_and_received']:.3f}x both ways), paper {p['paper_expansion']}x"
        )
    out = {
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "note": "shared 2-core machine; other jobs ran at the same time",
            "clock": args.clock,
        },
        "args": vars(args),
        "rows": rows,
        "paper_settings": paper,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
