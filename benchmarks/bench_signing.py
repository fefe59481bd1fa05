"""CPU cost of request signing: a device signing a call, the server verifying it (token lookup, Ed25519
signature, freshness, nonce), against the token-only check of the same registry, in the same run.

    python benchmarks/bench_signing.py --devices 1000 --calls 20000

Prints microseconds of CPU (time.process_time) per call for each side and the server's extra CPU per
round for a given number of authenticated calls per round (``--calls-per-round``; in the server-load
benchmark's setting, 1000 devices and rounds of 100 reports, each selected device makes 3 calls and each
of the others checks in about once per round: about 1,200 calls).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from hamrah.transport.identity import DeviceKey, RequestSigner
from hamrah.transport.provision import device_folders, provision
from hamrah.transport.security import TokenRegistry


def _cpu(fn, n: int) -> float:
    start = time.process_time()
    for i in range(n):
        fn(i)
    return (time.process_time() - start) / n * 1e6


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--devices", type=int, default=1000)
    p.add_argument("--calls", type=int, default=20000)
    p.add_argument("--calls-per-round", type=int, default=1200)
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="hamrah-sign-"))
    files = provision(work, args.devices)
    kits = device_folders(files["devices"], args.devices)
    signers = [RequestSigner(k.token, DeviceKey.load(k.signing_key), k.name) for k in kits]
    registry = TokenRegistry(files["registry"])
    n, m = args.calls, len(signers)
    metadata = []
    sign_us = _cpu(lambda i: metadata.append(signers[i % m].metadata("Report")), n)
    verify_us = _cpu(lambda i: registry.verify(metadata[i], "Report"), n)
    token_only = [md[:2] for md in metadata]  # device name and bearer token: what a token-only server reads
    token_us = _cpu(lambda i: registry.authenticate(token_only[i][1][1][len("Bearer ") :]), n)
    extra_ms = (verify_us - token_us) * args.calls_per_round / 1000
    print(
        json.dumps(
            {
                "devices": args.devices,
                "calls": n,
                "device_sign_us": round(sign_us, 1),
                "server_verify_us": round(verify_us, 1),
                "server_token_only_us": round(token_us, 1),
                "calls_per_round": args.calls_per_round,
                "server_extra_ms_per_round": round(extra_ms, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
