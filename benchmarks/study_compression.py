"""Compression trade-off on MNIST: rounds-to-target and uplink bytes-to-target for each codec.

McMahan et al. 2017's 2NN on MNIST, 100 IID clients, C = 0.1, E = 1, B = 10, lr = 0.1, target 0.97.
Each round: the simulator's client half (``Simulator.train_round``, batched), then the codec chain
(``hamrah.core.pipeline.process_round``, with per-client error-feedback state kept across rounds),
then FedAvg's ``apply`` on the chain's aggregate. Every codec starts from
the same model and samples the same clients. The downlink (float32 model broadcast) is the same for
every codec and reported once.

    python benchmarks/study_compression.py                       # ~10 min on 2 shared cores
    python benchmarks/study_compression.py --rounds 40 --codecs float32,q8,sign
    python benchmarks/study_compression.py --report                # the table of the last run
    python benchmarks/study_compression.py --codecs sign --rounds 60 --merge   # re-run some codecs, keep the rest
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from hamrah.algorithms import FedAvg, LocalSGD
from hamrah.compression import (
    HalfPrecision,
    RandomMask,
    SignEF,
    StochasticQuantizer,
    TopK,
)
from hamrah.core.aggregate import Aggregate
from hamrah.core.pipeline import Chain, Identity, process_round
from hamrah.data import federate, load_mnist
from hamrah.models import build_model
from hamrah.simulation import SimulationConfig, Simulator, seeded

CODECS = {
    "float32": Identity(),
    "float16": HalfPrecision("float16"),
    "q8": StochasticQuantizer(8),
    "q4": StochasticQuantizer(4),
    "q2": StochasticQuantizer(2),
    "sign": SignEF(),
    "topk10": TopK(0.1),
    "topk1": TopK(0.01),
    "mask25": RandomMask(0.25),
}
LABELS = {
    "float32": "float32",
    "float16": "float16",
    "q8": "8-bit stochastic",
    "q4": "4-bit stochastic",
    "q2": "2-bit stochastic",
    "sign": "1-bit sign + EF",
    "topk10": "top-10% + EF",
    "topk1": "top-1% + EF",
    "mask25": "random mask 25%",
}
_CODEC_TAG = 7  # spawn-key tag of the codecs' per-client streams


def run_codec(name: str, fed, args, deadline: float) -> dict:
    """Train with ``name``'s chain until the target, ``args.rounds`` or ``deadline``; return its record."""
    ds = fed.dataset
    sim = Simulator(
        seeded(lambda: build_model("2nn", ds), args.seed),
        fed,
        FedAvg(0.1, LocalSGD(epochs=1, batch_size=10, lr=0.1)),
        SimulationConfig(rounds=args.rounds),
    )
    chain, states, sstate = Chain([CODECS[name]]), {}, None
    curve, up_total, down_total, reached = [], 0, 0, {}
    for r in range(1, args.rounds + 1):
        ok = [x for x in sim.train_round(r) if x.error is None]
        rngs = {
            x.client_id: np.random.default_rng(
                np.random.SeedSequence(args.seed, spawn_key=(_CODEC_TAG, r, x.client_id))
            )
            for x in ok
        }
        out = process_round(
            chain,
            {x.client_id: x.delta for x in ok},
            {x.client_id: x.num_examples for x in ok},
            states,
            rngs,
            server_state=sstate,
            round_idx=r,
            round_seed=r,
        )
        states.update(out.states)
        sstate = out.server_state
        # FedAvg applies the chain's weighted mean as its one aggregate
        sim.params, sim.server_state = sim.algorithm.apply(
            sim.params,
            Aggregate.from_mean({"delta/" + k: v for k, v in out.aggregate.items()}, 1.0, len(ok)),
            sim.server_state,
        )
        up_total += out.bytes.total_up
        down_total += out.bytes.total_down
        _, acc = sim.evaluate()
        curve.append({"round": r, "accuracy": acc, "bytes_up": up_total})
        for t in (args.target, args.secondary_target):
            if t not in reached and acc >= t:
                reached[t] = {"rounds": r, "bytes_up": up_total, "bytes_down": down_total}
        if args.stop_at_target and args.target in reached:
            break
        if time.perf_counter() > deadline:
            break
    per_update = curve[-1]["bytes_up"] / (len(curve) * sim.cohort)
    hit, hit2 = reached.get(args.target, {}), reached.get(args.secondary_target, {})
    return {
        "codec": name,
        "label": LABELS[name],
        "bytes_per_update": per_update,
        "rounds_run": len(curve),
        "rounds_to_target": hit.get("rounds"),
        "bytes_up_to_target": hit.get("bytes_up"),
        "bytes_down_to_target": hit.get("bytes_down"),
        "rounds_to_secondary": hit2.get("rounds"),
        "bytes_up_to_secondary": hit2.get("bytes_up"),
        "final_accuracy": curve[-1]["accuracy"],
        "best_accuracy": max(c["accuracy"] for c in curve),
        "curve": curve,
    }


def table(data: dict) -> str:
    """Return the study as a markdown table (accuracy at the round every codec reached, bytes to targets)."""
    recs, setup = data["codecs"], data["setup"]
    common = min(r["rounds_run"] for r in recs)
    t1, t2 = setup["target"], setup["secondary_target"]
    mb = lambda b: "not reached" if b is None else f"{b / 1e6:,.1f}"
    rd = lambda r: "not reached" if r is None else str(r)
    head = (
        f"| codec | bytes/update | vs float32 | rounds run | accuracy at round {common} | uplink MB at round "
        f"{common} | rounds to {t2} | uplink MB to {t2} | rounds to {t1} | uplink MB to {t1} | best accuracy |"
    )
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in recs:
        at = r["curve"][common - 1]
        lines.append(
            f"| {r['label']} | {r['bytes_per_update']:,.0f} | {r['bytes_ratio']:.4f} | {r['rounds_run']} | "
            f"{at['accuracy']:.4f} | {at['bytes_up'] / 1e6:,.1f} | {rd(r['rounds_to_secondary'])} | "
            f"{mb(r['bytes_up_to_secondary'])} | {rd(r['rounds_to_target'])} | {mb(r['bytes_up_to_target'])} | "
            f"{r['best_accuracy']:.4f} |"
        )
    return "\n".join(lines)


def plot(records: list[dict], target: float, path: Path) -> None:
    """Write accuracy against cumulative uplink bytes and against rounds, one line per codec."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    for rec in records:
        c = rec["curve"]
        ax1.plot([p["bytes_up"] / 1e6 for p in c], [p["accuracy"] for p in c], label=rec["label"], linewidth=1.3)
        ax2.plot([p["round"] for p in c], [p["accuracy"] for p in c], label=rec["label"], linewidth=1.3)
    for ax in (ax1, ax2):
        ax.axhline(target, color="grey", linestyle="--", linewidth=1)
        ax.set_ylim(0.85, 0.985)
        ax.grid(alpha=0.3)
        ax.set_ylabel("test accuracy")
    ax1.set_xscale("log")
    ax1.set_xlabel("cumulative client->server bytes (MB, log)")
    ax2.set_xlabel("communication round")
    ax2.legend(fontsize=8, loc="lower right")
    fig.suptitle(f"MNIST 2NN, 100 IID clients, C=0.1, E=1, B=10, lr=0.1 (target {target:g})")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--codecs", default=",".join(CODECS))
    ap.add_argument("--rounds", type=int, default=150, help="most rounds per codec")
    ap.add_argument("--budget-s", type=float, default=600.0, help="wall-clock budget, split evenly across codecs")
    ap.add_argument("--target", type=float, default=0.97)
    ap.add_argument("--secondary-target", type=float, default=0.95, help="also reported (reachable in a short run)")
    ap.add_argument("--stop-at-target", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="benchmarks/results/compression.json")
    ap.add_argument("--plot", default="docs/img/compression_tradeoff.png")
    ap.add_argument(
        "--merge", action="store_true", help="merge into an existing --out, keeping the longer run of each codec"
    )
    ap.add_argument("--report", action="store_true", help="print the table of an existing --out file and exit")
    args = ap.parse_args()
    if args.report:
        print(table(json.loads(Path(args.out).read_text())))
        return
    fed = federate(load_mnist(), "iid", num_clients=100, seed=args.seed)
    names = args.codecs.split(",")
    records, start = [], time.perf_counter()
    for i, name in enumerate(names):
        deadline = start + args.budget_s * (i + 1) / len(names)
        rec = run_codec(name, fed, args, deadline)
        records.append(rec)
        print(
            f"{rec['label']:>18}: {rec['bytes_per_update']:>10,.0f} B/update, {rec['rounds_run']} rounds, "
            f"to {args.target}: {rec['rounds_to_target']} rounds, {rec['bytes_up_to_target']} B up; "
            f"to {args.secondary_target}: {rec['rounds_to_secondary']} rounds, {rec['bytes_up_to_secondary']} B up; "
            f"best {rec['best_accuracy']:.4f}",
            flush=True,
        )
    runs = [
        {"codecs": names, "max_rounds": args.rounds, "budget_s": args.budget_s, "wall_s": time.perf_counter() - start}
    ]
    if args.merge and Path(args.out).exists():  # runs are deterministic per codec: merge re-runs of some codecs
        old = json.loads(Path(args.out).read_text())
        longest = {r["codec"]: r for r in old["codecs"]}
        for r in records:  # a longer run of the same codec extends a shorter one (same seed, same prefix)
            if r["rounds_run"] > longest.get(r["codec"], {"rounds_run": 0})["rounds_run"]:
                longest[r["codec"]] = r
        records = sorted(longest.values(), key=lambda r: list(CODECS).index(r["codec"]))
        runs = old["setup"].get("runs", []) + runs
    base = next((r["bytes_per_update"] for r in records if r["codec"] == "float32"), None)
    for r in records:
        r["bytes_ratio"] = r["bytes_per_update"] / base if base else None
    setup = {
        "model": "2nn",
        "dataset": "mnist",
        "partition": "iid",
        "clients": 100,
        "C": 0.1,
        "E": 1,
        "B": 10,
        "lr": 0.1,
        "target": args.target,
        "secondary_target": args.secondary_target,
        "seed": args.seed,
        "runs": runs,
        "note": "shared 2-core machine",
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"setup": setup, "codecs": records}, indent=1))
    plot(records, args.target, Path(args.plot))
    print(table({"setup": setup, "codecs": records}))
    print(f"wrote {args.out} and {args.plot}")


if __name__ == "__main__":
    main()
