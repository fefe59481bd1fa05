"""CPU cost of the server's telemetry (hamrah.observe): one event call on the gRPC edge, and what a
dashboard viewer or a Prometheus scrape costs the server process, at N known devices.

    python benchmarks/bench_telemetry.py --devices 1000 --events 200000

CPU time (``time.process_time``), so other load on the machine does not inflate it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time

from hamrah.observe.dashboard.server import _json
from hamrah.observe.prometheus import TelemetryCollector, exposition
from hamrah.observe.telemetry import Telemetry


def per_call_us(fn, n: int) -> float:
    t0 = time.process_time()
    for i in range(n):
        fn(i)
    return (time.process_time() - t0) / n * 1e6


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--devices", type=int, default=1000)
    p.add_argument("--events", type=int, default=200_000)
    args = p.parse_args()
    keys = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(args.devices)]  # device keys are digests
    tel = Telemetry()
    n, d = args.events, args.devices
    records = [{"round": r, "selection_s": 0.5, "reporting_s": 1.2, "epsilon": 0.1 * r} for r in range(1, 501)]
    out = {
        "devices": d,
        "checkin_us": per_call_us(lambda i: tel.checkin(keys[i % d], True), n),
        "answered_us": per_call_us(lambda i: tel.answered(keys[i % d], "turned_away", 1), n),
        "report_us": per_call_us(lambda i: tel.report(keys[i % d], "accepted", 1, 800_000), n),
        "refused_us": per_call_us(lambda i: tel.refused(keys[i % d], "ProtocolError: update", 1), n),
        "live_state_json_ms": per_call_us(lambda i: _json(tel.snapshot()), 200) / 1000,
        "metrics_scrape_ms": per_call_us(lambda i: exposition(TelemetryCollector(tel, lambda: records)), 200) / 1000,
    }
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in out.items()}))


if __name__ == "__main__":
    main()
