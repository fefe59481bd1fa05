"""Aggregation modes over the real server: plain, SecAgg, SecAgg+ and Paillier, same devices, same rounds.

A real ``FLServer`` and N real device runtimes (``hamrah.device.fleet.run_fleet``: SQLite Example
Stores, gRPC on loopback, local training) in one process, FedAvg on MNIST for R rounds with every
device selected each round; the modes differ only in how updates reach the server. Reported per mode:
seconds per round (rounds 2..R; everything shares this machine's cores, so this is the total compute
of server and devices, not a deployment's latency), bytes each device sends per round, the committed
model's accuracy, and its largest difference from the plain run's model (the secure modes should
match it within their fixed-point precision).

    python benchmarks/bench_server_modes.py                                  # 2NN, 10 devices, 4 rounds
    python benchmarks/bench_server_modes.py --model logreg --devices 20 --modes plain,secagg+,paillier
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import tempfile
import time
from pathlib import Path

from hamrah.core.params import max_abs_diff
from hamrah.device.config import DeviceConfig
from hamrah.device.fleet import make_tokens, run_fleet
from hamrah.experiments.config import from_dict
from hamrah.experiments.serve import import_stores, server_setup
from hamrah.server.app import FLServer
from hamrah.server.config import server_config
from hamrah.server.state import ServerStore
from hamrah.transport.codec import encode_params

MODES = {
    "plain": {},
    "secagg": {"secure_aggregation": {"variant": "secagg", "clip": 0.5, "input_bits": 20}},
    "secagg+": {"secure_aggregation": {"variant": "secagg+", "clip": 0.5, "input_bits": 20}},
    "paillier": {"homomorphic_encryption": {"scheme": "paillier", "key_bits": 2048, "bound": 1.0}},
}
SERVER = {
    "selection_timeout_s": 30.0,
    "reporting_timeout_s": 600.0,
    "checkin_hold_s": 0.5,
    "reconnect_min_s": 0.05,
    "reconnect_max_s": 0.5,
    "retry_delay_s": 0.1,
    "over_selection": 1.0,
}


def experiment(model: str, devices: int, rounds: int, mode: str):
    return from_dict(
        {
            "data": {"dataset": "mnist", "partition": "iid", "num_clients": devices},
            "model": {"name": model},
            "algorithm": {"name": "fedavg", "client_fraction": 1.0, "local_epochs": 1, "batch_size": 50, "lr": 0.1},
            "run": {"rounds": rounds, "seed": 0},
            **MODES[mode],
        }
    )


async def serve(setup, state: Path, stores, tokens):
    server = FLServer(setup, state)
    port = await server.start(0)
    base = DeviceConfig(
        server=f"127.0.0.1:{port}",
        population=setup.server.population,
        retry_s=0.05,
        max_retry_s=0.3,
        poll_s=0.01,
        unreachable_after_s=5.0,
    )
    fleet = asyncio.ensure_future(run_fleet(base, stores, tokens))
    await server.serve(linger_s=0.5)
    await asyncio.wait_for(fleet, 30)
    return server


def run_mode(mode: str, args, work: Path, stores, tokens, reference=None) -> tuple[dict, dict]:
    exp = experiment(args.model, args.devices, args.rounds, mode)
    srv = server_config({**SERVER, "goal_count": args.devices, "tokens_file": str(work / "tokens.txt")})
    setup = server_setup(exp, srv)
    state = work / f"state-{mode}"
    start = time.perf_counter()
    server = asyncio.run(serve(setup, state, stores, tokens))
    wall = time.perf_counter() - start
    store = ServerStore(state, setup.config)
    recs = store.committed_rounds()
    store.close()
    later = recs[1:] or recs
    row = {
        "mode": mode,
        "rounds": len(recs),
        "wall_s": wall,
        "round_s": sum(r["round_s"] for r in later) / len(later),
        "bytes_up_per_device": (
            sum(r["bytes_up"] for r in later) / len(later) / args.devices
            if "bytes_up" in recs[0]
            else len(encode_params(server.coordinator.params))
        ),  # plain: one safetensors update
        "final_accuracy": recs[-1].get("test_accuracy"),
        "max_diff_vs_plain": None if reference is None else max_abs_diff(server.coordinator.params, reference),
    }
    return row, server.coordinator.params


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="2nn", choices=["logreg", "2nn"])
    ap.add_argument("--devices", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--modes", default="plain,secagg,secagg+", help=f"comma-separated, from {', '.join(MODES)}")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "server_modes.json"))
    args = ap.parse_args()
    modes = args.modes.split(",")
    if modes[0] != "plain":
        modes = ["plain"] + [m for m in modes if m != "plain"]
    with tempfile.TemporaryDirectory(prefix="hamrah-modes-") as tmp:
        work = Path(tmp)
        tokens = make_tokens(work / "tokens.txt", args.devices)
        stores = import_stores(
            experiment(args.model, args.devices, args.rounds, "plain"), work / "stores", list(range(args.devices))
        )
        rows, reference = [], None
        for mode in modes:
            row, params = run_mode(mode, args, work, stores, tokens, reference)
            reference = params if reference is None else reference
            rows.append(row)
            plain = rows[0]
            print(
                f"{mode:9s} {row['round_s']:6.2f} s/round (x{row['round_s'] / plain['round_s']:.2f} plain), "
                f"{row['bytes_up_per_device'] / 1e6:.3f} MB up/device/round, accuracy {row['final_accuracy']:.4f}"
                + (
                    f", max |diff| vs plain {row['max_diff_vs_plain']:.2e}"
                    if row["max_diff_vs_plain"] is not None
                    else ""
                ),
                flush=True,
            )
    out = {
        "machine": {"platform": platform.platform(), "python": platform.python_version()},
        "args": vars(args),
        "rows": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
