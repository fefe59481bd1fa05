"""Load test of the server on loopback: N connected devices, rounds of G reporting devices, 2NN- or
CNN-sized updates.

The server runs as a real ``hamrah server`` process; the devices are light gRPC clients in this
process (one channel each) that check in, download the checkpoint, wait ``--compute-s`` (standing
in for training), upload a pre-built update of the model's exact size and check in again at once
(devices turned away follow the server's pace steering). Server overhead per round = round wall time
- the devices' compute time - the server's test-set evaluation. Round 1 (devices connecting) is
left out. Both processes share this machine's cores.

    python benchmarks/bench_server_load.py --devices 100,500,1000 --model cnn --goal 100 --rounds 3

With ``--signed`` the devices are provisioned (``hamrah provision``) and every call carries an Ed25519
signature with a timestamp and a nonce, which the server verifies (the server's tokens_file is the
provisioned registry).

With ``--dashboard both`` each setting runs twice in the same invocation, without and then with the
live dashboard and ``/metrics`` (``[dashboard] enabled = true``), while a viewer in this process holds
the dashboard's live stream open and scrapes ``/metrics`` every second: the ratio of the two round
throughputs is the dashboard's and the exporters' cost.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import psutil
import torch

from hamrah.device.fleet import make_tokens
from hamrah.models import ModelSpec
from hamrah.transport.codec import CHUNK_BYTES, chunks, encode_params
from hamrah.transport.identity import DeviceKey, RequestSigner
from hamrah.transport.proto import fl_pb2 as pb
from hamrah.transport.proto import fl_pb2_grpc as pb_grpc
from hamrah.transport.provision import device_folders, provision

SHAPES = {"2nn": (1, 28, 28), "cnn": (1, 28, 28)}
CONFIG = """
[data]
dataset = "mnist"
partition = "iid"
num_clients = {devices}
[model]
name = "{model}"
[algorithm]
name = "fedavg"
client_fraction = 0.1
[run]
rounds = {rounds}
eval_every = 100000
seed = 0
[server]
goal_count = {goal}
over_selection = 1.0
min_reports = {goal}
selection_timeout_s = 120
reporting_timeout_s = 120
checkin_hold_s = 5.0
reconnect_min_s = 0.5
reconnect_max_s = 5.0
aggregators = 4
selectors = 4
tokens_file = "tokens.txt"
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def device(
    port: int, signer: RequestSigner, payload: bytes, compute_s: float, stop: asyncio.Event, stats: dict
) -> None:
    token = signer.token
    sign = signer.metadata

    def signed(method: str):
        stats["calls"] += 1
        return sign(method)

    limit = CHUNK_BYTES + (1 << 16)
    opts = [("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", limit)]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=opts) as ch:
        stub = pb_grpc.FederatedLearningStub(ch)
        req = pb.CheckInRequest(population="default", state=pb.DeviceState(idle=True, charging=True, unmetered=True))
        while not stop.is_set():
            try:
                reply = await stub.CheckIn(req, metadata=signed("CheckIn"))
            except grpc.aio.AioRpcError:
                await asyncio.sleep(0.5)
                continue
            stats["connected"].add(token)
            if reply.finished:
                return
            if not reply.HasField("task"):
                await asyncio.sleep(reply.reconnect_after_s)
                continue
            t = reply.task
            [
                c
                async for c in stub.DownloadCheckpoint(
                    pb.CheckpointRequest(task_id=t.task_id), metadata=signed("DownloadCheckpoint")
                )
            ]
            await asyncio.sleep(compute_s)

            async def parts(t=t):
                yield pb.ReportPart(
                    header=pb.ReportHeader(
                        task_id=t.task_id,
                        round=t.round,
                        status=pb.COMPLETED,
                        num_examples=600,
                        metrics=b'{"train_loss": 1.0}',
                        update_bytes=len(payload),
                    )
                )
                for piece in chunks(payload):
                    yield pb.ReportPart(chunk=pb.Chunk(data=piece))

            try:
                await stub.Report(parts(), metadata=signed("Report"))
                stats["reported"] += 1
                await asyncio.sleep(0.05)  # back at once: round time then measures the server, not device pacing
            except grpc.aio.AioRpcError:
                stats["late"] += 1


def peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _signers(work: Path, devices: int, signed: bool) -> list[RequestSigner]:
    if not signed:
        return [RequestSigner(t, None, "load") for t in make_tokens(work / "tokens.txt", devices)]
    provision(work / "pki", devices)
    (work / "tokens.txt").symlink_to(work / "pki" / "server" / "devices.json")
    return [
        RequestSigner(k.token, DeviceKey.load(k.signing_key), k.name) for k in device_folders(work / "pki", devices)
    ]


def _viewer(port: int, stop: asyncio.Event, seen: dict) -> None:
    """A dashboard viewer: holds the live stream open and scrapes /metrics every second (a thread)."""
    import http.client

    while not stop.is_set():
        try:
            if "stream" not in seen:
                seen["stream"] = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                seen["stream"].request("GET", "/api/stream")
                seen["stream"].getresponse()  # left open: the server pushes on every change
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/metrics")
            seen["scrapes"] = seen.get("scrapes", 0) + (conn.getresponse().read().startswith(b"# HELP") and 1)
            conn.close()
        except OSError:
            pass
        time.sleep(1.0)


async def one_setting(
    model: str,
    devices: int,
    goal: int,
    rounds: int,
    compute_s: float,
    signed: bool = False,
    server_set: str = "",
    dashboard: bool = False,
) -> dict:
    work = Path(tempfile.mkdtemp(prefix="hamrah-load-"))
    signers = _signers(work, devices, signed)
    extra = "".join(f"{kv.strip()}\n" for kv in server_set.split(",") if kv.strip())  # e.g. bounded_influence = false
    (work / "server.toml").write_text(
        CONFIG.format(devices=max(devices, 100), model=model, rounds=rounds, goal=goal) + extra
    )
    dash_port = free_port()
    if dashboard:
        with open(work / "server.toml", "a") as f:
            f.write(f"[dashboard]\nenabled = true\nport = {dash_port}\n")
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hamrah.cli",
            "server",
            "--config",
            str(work / "server.toml"),
            "--port",
            str(port),
            "--state",
            str(work / "state"),
        ],
        stdout=open(work / "server.log", "w"),
        stderr=subprocess.STDOUT,
    )
    spec = ModelSpec(model, SHAPES[model], 10)
    net = spec.build()
    # FedAvg's statistic: the delta, named delta/<param>
    payload = encode_params({f"delta/{k}": torch.randn_like(v) * 1e-3 for k, v in net.named_parameters()})
    stats = {"connected": set(), "reported": 0, "late": 0, "calls": 0}
    stop = asyncio.Event()
    rss = 0.0
    tasks = [asyncio.ensure_future(device(port, signers[i], payload, compute_s, stop, stats)) for i in range(devices)]
    seen: dict = {}
    viewer = asyncio.ensure_future(asyncio.to_thread(_viewer, dash_port, stop, seen)) if dashboard else None
    start = time.monotonic()
    cpu = 0.0
    while server.poll() is None:
        await asyncio.sleep(0.5)
        try:
            now = peak_rss_mb(server.pid)
            cpu = sum(psutil.Process(server.pid).cpu_times()[:2])  # the server's CPU seconds so far
        except (FileNotFoundError, psutil.NoSuchProcess):
            break
        if now == now:  # not NaN (an exited process has no VmHWM)
            rss = max(rss, now)
    wall = time.monotonic() - start
    stop.set()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    if viewer is not None:
        await viewer
    records = [json.loads(x) for x in (work / "state" / "metrics.jsonl").read_text().splitlines()]
    steady = records[1:] or records  # round 1 includes the devices' first connection
    overhead = [r["round_s"] - r.get("eval_s", 0.0) - compute_s for r in steady]
    mb = len(payload) / 2**20
    return {
        "model": model,
        "signed": signed,
        "devices": devices,
        "goal": goal,
        "rounds": len(records),
        "update_mb": round(mb, 3),
        "connected": len(stats["connected"]),
        "round_s": [r["round_s"] for r in records],
        "server_overhead_s": round(sum(overhead) / len(overhead), 3),
        "compute_s": compute_s,
        "updates_per_s": round(goal / (sum(overhead) / len(overhead)), 1),
        "mb_ingested_per_s": round(goal * mb / (sum(overhead) / len(overhead)), 1),
        "server_peak_rss_mb": round(rss, 1),
        "wall_s": round(wall, 1),
        "calls_per_round": round(stats["calls"] / max(len(records), 1)),
        "dashboard": dashboard,
        "metrics_scrapes": seen.get("scrapes", 0),
        "server_cpu_s": round(cpu, 1),
        "steady_rounds_per_s": round(len(steady) / sum(r["round_s"] for r in steady), 3),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--devices", default="100,500,1000")
    p.add_argument("--model", default="cnn", choices=list(SHAPES))
    p.add_argument("--goal", type=int, default=100)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--compute-s", type=float, default=1.0)
    p.add_argument("--signed", action="store_true", help="provisioned devices; every call signed (Ed25519, nonce)")
    p.add_argument("--out", default="benchmarks/results/server_load.json")
    p.add_argument(
        "--server-set",
        default="",
        help="extra [server] keys, comma-separated TOML, e.g. "
        "'bounded_influence = false, selection_window_s = 0' (the baseline without the reliability defaults)",
    )
    p.add_argument(
        "--dashboard",
        default="off",
        choices=["off", "on", "both"],
        help="run with the live dashboard and /metrics on (a viewer attached); both: off, then on",
    )
    p.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="run each device count's settings this many times, interleaved (with --dashboard both: off, on, "
        "off, on, ...), so slow drifts of a shared machine hit both sides alike",
    )
    args = p.parse_args()
    results = []
    modes = {"off": [False], "on": [True], "both": [False, True]}[args.dashboard]
    settings = [
        (n, dash) for n in [int(x) for x in args.devices.split(",")] for _ in range(args.repeat) for dash in modes
    ]
    start = time.monotonic()
    for k, (n, dash) in enumerate(settings):
        if k:  # progress on stderr, one line per setting: done, rate, time left
            per = (time.monotonic() - start) / k
            print(
                f"setting {k + 1}/{len(settings)} ({per:.0f} s each, about {per * (len(settings) - k):.0f} s left)",
                file=sys.stderr,
                flush=True,
            )
        r = asyncio.run(
            one_setting(
                args.model, n, min(args.goal, n), args.rounds, args.compute_s, args.signed, args.server_set, dash
            )
        )
        r["server_set"] = args.server_set
        r["repeat"] = k // len(modes) % args.repeat
        print(json.dumps(r), flush=True)
        results.append(r)
    if args.dashboard == "both":
        for n in sorted({n for n, _ in settings}):
            pairs = [(a, b) for a, b in zip(results[::2], results[1::2]) if a["devices"] == n]
            ratios = sorted(
                b["steady_rounds_per_s"] / a["steady_rounds_per_s"] - 1 for a, b in pairs if a["steady_rounds_per_s"]
            )
            if ratios:
                print(
                    f"{n} devices: dashboard on vs off, throughput change per pair {[f'{x:+.1%}' for x in ratios]}, "
                    f"median {ratios[len(ratios) // 2]:+.1%}",
                    file=sys.stderr,
                )
    out = Path(args.out)
    old = json.loads(out.read_text()) if out.exists() else {"results": []}
    keep = [r for r in old["results"] if (r["model"], r.get("signed", False)) != (args.model, args.signed)]
    meta = {
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "grpc": grpc.__version__,
        "psutil": psutil.__version__,
    }
    out.write_text(json.dumps({"meta": meta, "results": keep + results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
