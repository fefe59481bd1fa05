"""Vertical LR between real parties: wall time per epoch, plaintext vs Paillier and OU (FATE's measure).

FATE reports CoordinatedLR's cost as the wall time of its parties running the same protocol with and
without encryption through its communication stack (2 min 19 s per epoch with Paillier vs 19 s
plaintext on default credit: 7.3x). This measures the same quantity for hamrah: every party is its own
process (``python -m hamrah.cli party --config ...``), the parties talk gRPC over mutual TLS on
loopback, and the plaintext run (``encrypted = false``) is the same protocol code, the same batches,
the same messages and processes; only the arithmetic differs.

For each protocol and mode (plaintext, ``ou``, ``paillier``) it runs the parties twice, for E1 and E2
epochs (``--epochs E1,E2``; ``tol = 0``, so every epoch runs), each time from a fresh out folder (no
checkpoint to resume from), and reports, per epoch at the steady state:

* ``wall_s_per_epoch_lines`` (the main figure): the harness timestamps each ``guest: epoch k done``
  line of the E2 run as it arrives: (t(last) - t(1)) / (last - 1), i.e. whole epochs between two
  epoch ends (each with its offline part, the random factors made at the epoch's start), after
  start-up, PSI and key generation;
* ``cpu_s_per_epoch_lines``: the CPU-seconds (user + system, every thread) all party processes used
  over the same epochs (``psutil``, sampled when each such line arrives), also per party;
* ``wall_s_per_epoch`` and ``cpu_s_per_epoch``: a cross-check that needs no progress lines:
  (E2 run - E1 run) / (E2 - E1), wall from the first process's start to the last
  one's exit, CPU from ``os.wait4`` of each party. Start-up varies by seconds from run to run (imports
  and PSI on a shared machine; the HE keys are a prime search of random length; a party that starts
  before its peer listens retries every second), so this figure is only reliable when E2 - E1 epochs take much longer
  than that (it can even come out negative at small sizes);
* ``sent_bytes_per_epoch``: the difference of the bytes all parties sent (their ``summary.json``;
  exact, the one-off PSI and key exchange being the same in both runs);
* ``overhead_*``: each figure over the plaintext mode's (FATE's 7.3x is ``overhead_wall_lines``'s
  counterpart).

Data: the bundled default-credit split (30,000 rows; guest 13 columns + label, host 10), or its first
``--rows`` ids (trimmed CSVs written to the temporary folder). The parties share the machine's cores:
the load average before and after each run is recorded, as is the core count.

    python benchmarks/bench_vertical_parties.py --rows 2000 --epochs 1,3 --batch-size 64 \
        --out benchmarks/results/vertical_parties_2000_b64.json
    python benchmarks/bench_vertical_parties.py --rows 5000 --epochs 1,3 --batch-size 64 \
        --out benchmarks/results/vertical_parties_5000_b64.json
    python benchmarks/bench_vertical_parties.py --rows 5000 --epochs 1,3 --batch-size 1024 \
        --out benchmarks/results/vertical_parties_5000_b1024.json
    python benchmarks/bench_vertical_parties.py --rows 10000 --epochs 1,3 --batch-size 64 \
        --out benchmarks/results/vertical_parties_10000_b64.json
    python benchmarks/bench_vertical_parties.py --protocols sshe_lr --rows 5000 --epochs 1,3 --batch-size 64 \
        --out benchmarks/results/vertical_parties_sshe_5000_b64.json
    python benchmarks/bench_vertical_parties.py --rows 0 --epochs 1,3 --batch-size 64 \
        --out benchmarks/results/vertical_parties_full_b64.json   # all 30,000 rows (~10 min): a quiet machine
"""

from __future__ import annotations

import argparse
import csv
import gzip
import itertools
import json
import os
import platform
import re
import shlex
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from hamrah.parties import make_party_tls

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "vertical"
ROLES = {
    "coordinated_lr": {"guest": "guest", "host": "host", "arbiter": "arbiter"},
    "sshe_lr": {"guest": "guest", "host": "host"},
}
MODES = {"plaintext": {"encrypted": False}, "ou": {"scheme": "ou"}, "paillier": {"scheme": "paillier"}}
EPOCH_LINE = re.compile(r"^guest: epoch (\d+) done")


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _trim(rows: int, folder: Path) -> tuple[dict[str, Path], int]:
    """The parties' CSVs: the bundled files, or the rows of the guest's first ``rows`` ids in each."""
    files = {p: DATA / f"default_credit_hetero_{p}.csv.gz" for p in ("guest", "host")}
    with gzip.open(files["guest"], "rt", newline="") as f:
        ids = [r[0] for r in csv.reader(f)][1:]
    if not rows or rows >= len(ids):
        return files, len(ids)
    keep, out = set(ids[:rows]), {}
    for party, path in files.items():
        with gzip.open(path, "rt", newline="") as f:
            reader = csv.reader(f)
            header = next(reader)
            kept = [r for r in reader if r[0] in keep]
        out[party] = folder / f"{party}.csv"
        with open(out[party], "w", newline="") as f:
            csv.writer(f).writerows([header, *kept])
    return out, rows


def _toml_value(v) -> str:
    return str(v).lower() if isinstance(v, bool) else f'"{v}"' if isinstance(v, str) else repr(v)


def _write_configs(run: Path, protocol: str, settings: dict, data: dict[str, Path], tls: Path) -> dict[str, Path]:
    """One TOML per party (the shape of configs/vertical_coordinated_*.toml), fresh ports and out folder."""
    roles = ROLES[protocol]
    ports = {name: _port() for name in roles}
    proto = "\n".join(f"{k} = {_toml_value(v)}" for k, v in settings.items())
    files = {}
    for name, role in roles.items():
        data_part = ""
        if name in data:
            label = 'label_column = "y"\n' if role == "guest" else ""
            data_part = f'[data]\npath = "{data[name]}"\n{label}'
        peers = "\n".join(f'{o} = "127.0.0.1:{ports[o]}"' for o in roles if o != name)
        files[name] = run / f"{name}.toml"
        files[name].write_text(
            f'[party]\nname = "{name}"\nrole = "{role}"\nlisten = "127.0.0.1:{ports[name]}"\n'
            f'out = "{run / "out" / name}"\ntimeout_s = 600\nretries = 0\n\n{data_part}\n'
            f"[peers]\n{peers}\n\n[tls]\n"
            f'ca = "{tls / "ca.pem"}"\ncert = "{tls / f"{name}-server.pem"}"\nkey = "{tls / f"{name}-server.key"}"\n'
            f'client_cert = "{tls / f"{name}-client.pem"}"\nclient_key = "{tls / f"{name}-client.key"}"\n\n'
            f'[protocol]\nname = "{protocol}"\n{proto}\n'
        )
    return files


def _cpu(pids: dict[str, int]) -> dict[str, float | None]:
    """CPU-seconds (user + system, all threads) each process has used so far; None if it is gone."""
    import psutil

    out: dict[str, float | None] = {}
    for name, pid in pids.items():
        try:
            t = psutil.Process(pid).cpu_times()
            out[name] = t.user + t.system
        except psutil.Error:
            out[name] = None
    return out


def _read_lines(proc: subprocess.Popen, t0: float, lines: list, pids: dict[str, int], marks: list) -> None:
    """Timestamp each line as it arrives; at each ``guest: epoch k done``, sample every party's CPU."""
    for line in proc.stdout:
        now = time.monotonic() - t0
        lines.append((now, line.rstrip("\n")))
        m = EPOCH_LINE.match(line) if marks is not None else None
        if m:
            marks.append({"epoch": int(m.group(1)), "t": now, "cpu": _cpu(pids)})


def run_parties(files: dict[str, Path], timeout_s: float) -> dict:
    """Start every party as its own process; wait for all; return wall, CPU, bytes and timed lines."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", GRPC_VERBOSITY="NONE")
    load_before = os.getloadavg()
    t0 = time.monotonic()
    procs, lines, readers, marks = {}, {}, [], []
    for name, config in files.items():
        procs[name] = subprocess.Popen(
            [sys.executable, "-m", "hamrah.cli", "party", "--config", str(config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            cwd=config.parent,
        )
    pids = {name: p.pid for name, p in procs.items()}
    for name, p in procs.items():
        lines[name] = []
        who = marks if name == "guest" else None
        readers.append(threading.Thread(target=_read_lines, args=(p, t0, lines[name], pids, who), daemon=True))
        readers[-1].start()
    killer = threading.Timer(timeout_s, lambda: [p.kill() for p in procs.values() if p.returncode is None])
    killer.start()
    cpu, ends, codes = {}, {}, {}
    try:
        for name, p in procs.items():  # each one's own rusage: os.wait4 (Popen.wait would discard it)
            _, status, usage = os.wait4(p.pid, 0)
            ends[name] = time.monotonic() - t0
            p.returncode = codes[name] = os.waitstatus_to_exitcode(status)
            cpu[name] = usage.ru_utime + usage.ru_stime
    finally:
        killer.cancel()
    for r in readers:
        r.join(10)
    wall = max(ends.values())
    if any(codes.values()):
        tail = {n: [text for _, text in lines[n][-8:]] for n in procs}
        raise RuntimeError(f"a party failed (exit codes {codes}); last lines: {json.dumps(tail, indent=1)}")
    summaries = {n: json.loads((files[n].parent / "out" / n / "summary.json").read_text()) for n in files}
    return {
        "wall_s": wall,
        "exit_s": ends,
        "cpu_s": cpu,
        "cpu_s_total": sum(cpu.values()),
        "sent_bytes_total": sum(sum(s["sent_bytes"].values()) for s in summaries.values()),
        "sent_bytes": {n: s["sent_bytes"] for n, s in summaries.items()},
        "guest_epoch_marks": marks,
        "lines": {n: [[round(t, 3), text] for t, text in ls] for n, ls in lines.items()},
        "epochs_done": summaries["guest"].get("epochs"),
        "load_before": load_before,
        "load_after": os.getloadavg(),
    }


def _per_epoch(short: dict, long: dict, e1: int, e2: int) -> dict:
    d = e2 - e1
    out = {
        "wall_s_per_epoch": (long["wall_s"] - short["wall_s"]) / d,
        "cpu_s_per_epoch": (long["cpu_s_total"] - short["cpu_s_total"]) / d,
        "cpu_s_per_epoch_by_party": {n: (long["cpu_s"][n] - short["cpu_s"][n]) / d for n in long["cpu_s"]},
        "sent_bytes_per_epoch": (long["sent_bytes_total"] - short["sent_bytes_total"]) / d,
        "startup_wall_s": short["wall_s"] - e1 * (long["wall_s"] - short["wall_s"]) / d,
    }
    marks = [m for m in long["guest_epoch_marks"] if None not in m["cpu"].values()]
    if len(marks) >= 2:  # from the first epoch's end to the last one's whose CPU every party still had
        a, b = marks[0], marks[-1]
        n = b["epoch"] - a["epoch"]
        out["lines_epochs"] = [a["epoch"], b["epoch"]]
        out["wall_s_per_epoch_lines"] = (b["t"] - a["t"]) / n
        out["cpu_s_per_epoch_lines"] = sum(b["cpu"].values()) / n - sum(a["cpu"].values()) / n
        out["cpu_s_per_epoch_lines_by_party"] = {p: (b["cpu"][p] - a["cpu"][p]) / n for p in a["cpu"]}
        out["guest_epoch_intervals_s"] = [y["t"] - x["t"] for x, y in itertools.pairwise(marks)]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--protocols", default="coordinated_lr", help="comma-separated: coordinated_lr, sshe_lr")
    ap.add_argument("--modes", default="plaintext,ou,paillier", help="comma-separated: plaintext, ou, paillier")
    ap.add_argument("--rows", type=int, default=0, help="the first N default-credit ids (0: all 30,000)")
    ap.add_argument("--epochs", default="1,3", help="E1,E2: the two runs' epochs (per epoch = difference)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--key-bits", type=int, default=2048)
    ap.add_argument("--lr", type=float, default=0.5)
    ap.add_argument("--transform", default="standard", help="standard or quantile")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds before a run's parties are killed")
    ap.add_argument("--out", default="benchmarks/results/vertical_parties.json")
    args = ap.parse_args()
    e1, e2 = (int(x) for x in args.epochs.split(","))
    if not 1 <= e1 < e2:
        raise SystemExit("--epochs E1,E2: expected 1 <= E1 < E2")
    protocols, modes = args.protocols.split(","), args.modes.split(",")
    for p in protocols:
        if p not in ROLES:
            raise SystemExit(f"--protocols: {p!r} is not one of {', '.join(ROLES)}")
    for m in modes:
        if m not in MODES:
            raise SystemExit(f"--modes: {m!r} is not one of {', '.join(MODES)}")
    result: dict = {
        "command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
        "cores": os.cpu_count(),
        "machine": platform.platform(),
        "python": platform.python_version(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "results": {},
    }
    with tempfile.TemporaryDirectory(prefix="bench-parties-") as tmp:
        tmp = Path(tmp)
        make_party_tls(tmp / "tls", ["guest", "host", "arbiter"])
        data, rows = _trim(args.rows, tmp)
        result["rows"] = rows
        base = {
            "epochs": 0,
            "batch_size": args.batch_size,
            "lr": args.lr,
            "l2": 1 / rows,
            "tol": 0.0,
            "key_bits": args.key_bits,
            "transform": args.transform,
        }
        result["settings"] = {k: v for k, v in base.items() if k != "epochs"}
        for protocol in protocols:
            per_mode = result["results"][protocol] = {}
            for mode in modes:
                runs = {}
                for epochs in (e1, e2):
                    run = tmp / protocol / mode / f"e{epochs}"
                    run.mkdir(parents=True)
                    settings = {**base, "epochs": epochs, **MODES[mode]}
                    runs[epochs] = run_parties(_write_configs(run, protocol, settings, data, tmp / "tls"), args.timeout)
                    r = runs[epochs]
                    print(
                        f"{protocol} {mode} {epochs} epoch(s): wall {r['wall_s']:.2f} s, "
                        f"CPU {r['cpu_s_total']:.2f} s, sent {r['sent_bytes_total'] / 1e6:.2f} MB",
                        flush=True,
                    )
                per_epoch = _per_epoch(runs[e1], runs[e2], e1, e2)
                per_mode[mode] = {**per_epoch, "runs": {str(k): v for k, v in runs.items()}}
            plain = per_mode.get("plaintext")
            for mode, r in per_mode.items():
                for key in ("wall_s_per_epoch", "cpu_s_per_epoch", "wall_s_per_epoch_lines", "cpu_s_per_epoch_lines"):
                    if plain and key in r and key in plain and plain[key] > 0:
                        r["overhead_" + key.replace("_s_per_epoch", "")] = r[key] / plain[key]
                nan = float("nan")
                print(
                    f"{protocol:14s} {mode:9s} per epoch: wall {r.get('wall_s_per_epoch_lines', nan):7.3f} s "
                    f"(difference {r['wall_s_per_epoch']:7.3f}), CPU {r.get('cpu_s_per_epoch_lines', nan):7.3f} s "
                    f"(difference {r['cpu_s_per_epoch']:7.3f}), sent {r['sent_bytes_per_epoch'] / 1e6:6.2f} MB; "
                    f"x{r.get('overhead_wall_lines', nan):.1f} wall, x{r.get('overhead_cpu_lines', nan):.1f} CPU "
                    f"(difference: x{r.get('overhead_wall', nan):.1f}, x{r.get('overhead_cpu', nan):.1f})",
                    flush=True,
                )
    result["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
