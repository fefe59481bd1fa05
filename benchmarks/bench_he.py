"""Cost of aggregating a 2NN-sized update under homomorphic encryption, against plaintext float32.

For each scheme (packed Paillier, batched CKKS) and each client count n, with the scheme sized for
n clients (Paillier's slot headroom grows with log2 n): a key holder makes keys; clients encrypt
and serialise their update (Paillier: ``--encryptions`` distinct clients are timed, the others reuse
their ciphertexts, which changes no cost; CKKS: all n encrypt, since its error bound holds for independent
encryptions and a reused ciphertext's error adds n times); the server parses the uploads with the
public key only and adds n ciphertext vectors (n - 1 additions); the key holder decrypts the
aggregate, checked against the plaintext sum. The baseline does the same with plain float32 vectors:
``tobytes`` / ``frombuffer`` and numpy adds.
Times are process CPU seconds (the machine is shared); ``wall_s`` is each point's wall time.

    python benchmarks/bench_he.py                                   # 199,210 floats, n = 2, 10, 50
    python benchmarks/bench_he.py --schemes ckks --clients 2,10,50,100
    python benchmarks/bench_he.py --length 20000 --key-bits 1024    # a quick look
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np

from hamrah.he import CKKSConfig, CKKSScheme, HEScheme, PaillierConfig, PaillierScheme

# Process CPU time, not wall time: on the shared machine other jobs inflate wall time several-fold,
# while every step here runs on one thread (gmpy2, SEAL encryption), so CPU time is its uncontended cost.
CLOCK = time.process_time
REPEAT = 50  # the float32 adds are too short to time once
TWO_NN_PARAMS = 784 * 200 + 200 + 200 * 200 + 200 + 200 * 10 + 10  # 199,210


def client_updates(length: int, count: int, bound: float, seed: int) -> list[np.ndarray]:
    """Return ``count`` update-like vectors (normal, std 0.01, clipped to ``bound``)."""
    rng = np.random.default_rng(seed)
    return [np.clip(rng.normal(0.0, 0.01, length), -bound, bound) for _ in range(count)]


def timed(fn, *args):
    """Return ``(fn(*args), seconds)``: CPU seconds of this process (see ``CLOCK``)."""
    start = CLOCK()
    out = fn(*args)
    return out, CLOCK() - start


def plaintext_baseline(xs: list[np.ndarray], n: int) -> dict:
    """Return the float32 costs: serialise, parse, add n vectors."""
    blobs, enc_s = [], 0.0
    for x in xs:
        blob, s = timed(lambda v: v.astype(np.float32).tobytes(), x)
        blobs.append(blob)
        enc_s += s
    parsed = [np.frombuffer(b, dtype=np.float32) for b in blobs]
    start = CLOCK()
    for _ in range(REPEAT):
        total = parsed[0].copy()
        for i in range(1, n):
            total += parsed[i % len(parsed)]
    add_s = (CLOCK() - start) / REPEAT
    return {
        "bytes_per_client": len(blobs[0]),
        "client_s": enc_s / len(xs),
        "server_add_s_per_client": add_s / max(n - 1, 1),
        "decrypt_s": 0.0,
    }


def bench_scheme(scheme: HEScheme, xs: list[np.ndarray], n: int, tolerance: float) -> dict:
    """Return the measured costs of one encrypted aggregation of ``n`` clients."""
    keys, keygen_s = timed(scheme.keygen)
    public_bytes = scheme.public_to_bytes(keys.public)
    uploads, enc_s, ser_s = [], [], []
    for x in xs:
        c, s = timed(scheme.encrypt, keys.public, x)
        blob, t = timed(scheme.ciphertext_to_bytes, c)
        uploads.append(blob)
        enc_s.append(s)
        ser_s.append(t)
    server_pub = scheme.public_from_bytes(public_bytes)
    parsed, parse_s = timed(lambda: [scheme.ciphertext_from_bytes(server_pub, b) for b in uploads])
    start = CLOCK()
    total = parsed[0]
    for i in range(1, n):
        total = scheme.add(total, parsed[i % len(parsed)])
    add_s = CLOCK() - start
    result, dec_s = timed(scheme.decrypt_sum, keys.secret, total)
    expected = sum(xs[i % len(xs)] for i in range(n))
    err = float(np.abs(result - expected).max())
    return {
        "clients": n,
        "length": len(xs[0]),
        "ciphertexts_per_client": scheme.num_ciphertexts(len(xs[0])),
        "keygen_s": keygen_s,
        "public_key_bytes": len(public_bytes),
        "bytes_per_client": len(uploads[0]),
        "client_encrypt_s": float(np.mean(enc_s)),
        "client_serialize_s": float(np.mean(ser_s)),
        "server_parse_s_per_client": parse_s / len(uploads),
        "server_add_s_per_client": add_s / max(n - 1, 1),
        "server_add_total_s": add_s,
        "decrypt_s": dec_s,
        "max_abs_error": err,
        "error_bound": tolerance,
        "within_bound": err <= tolerance,
    }


def make_scheme(name: str, n: int, args) -> tuple[HEScheme, float, dict]:
    """Return the scheme sized for ``n`` clients, its error bound for the sum, and its parameters."""
    if name == "paillier":
        cfg = PaillierConfig(args.key_bits, args.precision_bits, args.bound, n)
        p = cfg.packing
        params = {
            "key_bits": cfg.key_bits,
            "precision_bits": cfg.precision_bits,
            "bound": cfg.bound,
            "slot_bits": p.slot_bits,
            "headroom_bits": p.headroom_bits,
            "slots_per_ciphertext": p.slots,
        }
        return PaillierScheme(cfg), n * 2.0 ** -(cfg.precision_bits + 1), params
    cfg = CKKSConfig(args.poly_degree, tuple(args.coeff_bits), args.scale_bits, args.bound, n)
    params = {
        "poly_modulus_degree": cfg.poly_modulus_degree,
        "coeff_mod_bit_sizes": list(cfg.coeff_mod_bit_sizes),
        "scale_bits": cfg.scale_bits,
        "slots_per_ciphertext": cfg.slots,
    }
    return CKKSScheme(cfg), cfg.error_bound(n), params


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--length", type=int, default=TWO_NN_PARAMS)
    ap.add_argument("--clients", default="2,10,50", help="comma-separated client counts")
    ap.add_argument("--schemes", default="paillier,ckks")
    ap.add_argument("--encryptions", type=int, default=1, help="distinct client encryptions timed per point")
    ap.add_argument("--key-bits", type=int, default=2048)
    ap.add_argument("--precision-bits", type=int, default=24)
    ap.add_argument("--bound", type=float, default=1.0)
    ap.add_argument("--poly-degree", type=int, default=8192)
    ap.add_argument("--coeff-bits", type=lambda s: [int(v) for v in s.split(",")], default=[60, 60])
    ap.add_argument("--scale-bits", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="benchmarks/results/he.json")
    args = ap.parse_args()

    clients = [int(v) for v in args.clients.split(",")]
    all_xs = client_updates(args.length, max(clients + [args.encryptions]), args.bound, args.seed)
    xs = all_xs[: args.encryptions]
    rows = []
    for n in clients:
        base = plaintext_baseline(xs, n)
        rows.append({"scheme": "plaintext_float32", "clients": n, "length": args.length, **base})
        print(f"plaintext n={n}: {base['bytes_per_client']} B/client", flush=True)
        for name in args.schemes.split(","):
            scheme, tol, params = make_scheme(name, n, args)
            wall = time.perf_counter()
            r = bench_scheme(scheme, all_xs[:n] if name == "ckks" else xs, n, tol)
            r["wall_s"] = time.perf_counter() - wall
            r.update(
                scheme=name,
                params=params,
                bytes_vs_plaintext=r["bytes_per_client"] / base["bytes_per_client"],
                server_add_vs_plaintext=r["server_add_s_per_client"] / base["server_add_s_per_client"],
            )
            rows.append(r)
            print(
                f"{name} n={n}: encrypt {r['client_encrypt_s']:.2f} s, add {r['server_add_s_per_client'] * 1e3:.1f} "
                f"ms/client, decrypt {r['decrypt_s']:.2f} s, {r['bytes_per_client'] / 1e6:.2f} MB/client "
                f"({r['bytes_vs_plaintext']:.1f}x), max error {r['max_abs_error']:.2e}",
                flush=True,
            )
    meta = {
        "python": platform.python_version(),
        "cpu": platform.machine(),
        "phe": version("phe"),
        "gmpy2": version("gmpy2"),
        "tenseal": version("tenseal"),
        "machine": "shared 2-core CPU machine (other jobs running); times are process CPU seconds",
        "command": "python benchmarks/bench_he.py "
        + " ".join(
            f"--{k.replace('_', '-')} {','.join(map(str, v)) if isinstance(v, list) else v}"
            for k, v in vars(args).items()
            if k != "out"
        ),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"meta": meta, "results": rows}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
