"""Cost of the HE pipeline stage per round, as a run uses it (``[homomorphic_encryption]``).

One logistic-regression update for MNIST (7,850 values) through ``HomomorphicSum``: a client encrypts
and serialises it, the server parses ``--clients`` uploads, weights them (by n_k = ``--examples``, as the
real server does, or 1 each under DP) and adds them with the public key only, the key holder decrypts
the sum. Baseline: the same update as the pipeline's float32 payload. Times are process CPU seconds
(the machine is shared, so wall time would count other jobs).

    python benchmarks/bench_he_stage.py          # Paillier 2048 and CKKS N = 8192, both weightings
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from hamrah.core.pipeline import ClientContext, DensePayload, spec_of
from hamrah.he.stage import HomomorphicSum, KeyHolder, default_max_weight, he_settings

ROWS = [  # (scheme section, weighted by n_k)
    ({"scheme": "paillier", "key_bits": 2048}, True),
    ({"scheme": "paillier", "key_bits": 2048}, False),
    ({"scheme": "ckks", "poly_modulus_degree": 8192}, True),
    ({"scheme": "ckks", "poly_modulus_degree": 8192}, False),
]


def cpu(fn, *args):
    start = time.process_time()
    out = fn(*args)
    return out, time.process_time() - start


def one_row(section: dict, weighted: bool, clients: int, examples: int) -> dict:
    settings = he_settings(section, default_max_weight(not weighted, clients))
    holder = KeyHolder.generate(settings)
    stage = HomomorphicSum(settings, holder.public_bytes, holder)
    gen = torch.Generator().manual_seed(0)
    update = {"weight": torch.randn(10, 784, generator=gen) * 0.01, "bias": torch.randn(10, generator=gen) * 0.01}
    ctx = ClientContext(0, 1, np.random.default_rng(0))
    payload, enc_s = cpu(lambda: stage.encode(update, None, ctx)[0].to_bytes())
    spec = spec_of(update)
    parsed, read_s = cpu(lambda: [stage.read(payload, spec) for _ in range(clients)])
    weight = examples if weighted else 1
    total, add_s = cpu(stage.weighted_sum, parsed, [weight] * clients)
    mean, dec_s = cpu(stage.decrypt, total, spec)
    err = max(float((mean[k] / (weight * clients) - update[k]).abs().max()) for k in update)
    plain = DensePayload(update).nbytes
    return {
        "scheme": section["scheme"],
        "settings": settings.to_dict(),
        "weighted_by_examples": weighted,
        "clients": clients,
        "bytes_per_client": len(payload),
        "float32_bytes": plain,
        "vs_float32": len(payload) / plain,
        "encrypt_s": enc_s,
        "parse_s_per_client": read_s / clients,
        "weight_and_add_s": add_s,
        "decrypt_s": dec_s,
        "max_abs_error_of_mean": err,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=10)
    ap.add_argument("--examples", type=int, default=600, help="n_k of every client when weighting by examples")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "he_stage.json"))
    args = ap.parse_args()
    rows = []
    for section, weighted in ROWS:
        row = one_row(section, weighted, args.clients, args.examples)
        rows.append(row)
        print(
            f"{row['scheme']:8s} max_weight {row['settings']['max_weight']:>8} {row['bytes_per_client']:>8,} B/client "
            f"({row['vs_float32']:.1f}x float32), encrypt {row['encrypt_s']:.3f} s, weight+add {args.clients} "
            f"{row['weight_and_add_s']:.3f} s, decrypt {row['decrypt_s']:.3f} s, "
            f"error {row['max_abs_error_of_mean']:.1e}",
            flush=True,
        )
    out = {
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "clock": "process CPU seconds",
        },
        "args": vars(args),
        "rows": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
