"""CKKS's decryption error: its spread, its tails, and the largest seen, against ``CKKSConfig.error_bound``.

SEAL draws keys and encryption noise from its own generator (no seed), so every run differs a little.
For each configuration (the tests' N = 4096 at scale 2^25, the defaults' N = 8192 at 2^40) it reports, in
units of ``N * 2^-scale``: the standard deviation, kurtosis and largest absolute error of one fresh encryption
over ``--slots`` slots (five keys), then the largest error of single encryptions and of sums of two (scaled
by sqrt(2)) over as many fresh keys as fit in ``--seconds``. docs/he.md ("Precision") quotes it.

    python benchmarks/bench_he_error.py        # -> benchmarks/results/he_error.json (about 2.5 minutes)
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np

from hamrah.he.ckks import CKKSConfig
from hamrah.he.scheme import CKKSScheme

CONFIGS = {
    "tests": CKKSConfig(
        poly_modulus_degree=4096, coeff_mod_bit_sizes=(40, 40), scale_bits=25, bound=1.0, max_clients=8
    ),
    "defaults": CKKSConfig(),
}


def spread(cfg: CKKSConfig, slots: int) -> dict:
    """Standard deviation, kurtosis and largest error of one fresh encryption, over five keys."""
    scheme, unit = CKKSScheme(cfg), cfg.poly_modulus_degree * 2.0**-cfg.scale_bits
    errs = []
    for k in range(5):
        keys = scheme.keygen(np.random.default_rng(k))
        x = np.random.default_rng(k).uniform(-1, 1, slots // 5)
        errs.append((scheme.decrypt_sum(keys.secret, scheme.encrypt(keys.public, x)) - x) / unit)
    e = np.concatenate(errs)
    kurtosis = float(((e - e.mean()) ** 4).mean() / e.var() ** 2)
    return {"slots": int(e.size), "std": float(e.std()), "kurtosis": kurtosis, "max": float(np.abs(e).max())}


def largest_over_keys(cfg: CKKSConfig, seconds: float, slots: int = 4000) -> dict:
    """The largest error, per sqrt(count), of sums of one and two fresh encryptions under fresh keys."""
    scheme, unit = CKKSScheme(cfg), cfg.poly_modulus_degree * 2.0**-cfg.scale_bits
    worst, keys_made, start = 0.0, 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        keys = scheme.keygen(np.random.default_rng(keys_made))
        x = np.random.default_rng(keys_made).uniform(-1, 1, slots)
        for count in (1, 2):
            total = scheme.encrypt(keys.public, x)
            for _ in range(count - 1):
                total = scheme.add(total, scheme.encrypt(keys.public, x))
            err = np.abs(scheme.decrypt_sum(keys.secret, total) - count * x).max()
            worst = max(worst, float(err / (unit * math.sqrt(count))))
        keys_made += 1
    return {"keys": keys_made, "slots": keys_made * slots * 2, "max_per_sqrt_count": worst}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--slots", type=int, default=1_000_000)
    ap.add_argument("--seconds", type=float, default=60.0, help="per configuration, for the fresh-keys search")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "he_error.json"))
    args = ap.parse_args()
    out = {}
    for name, cfg in CONFIGS.items():
        bound = cfg.error_bound(1) / (cfg.poly_modulus_degree * 2.0**-cfg.scale_bits)
        row = {"N": cfg.poly_modulus_degree, "scale_bits": cfg.scale_bits, "bound_per_sqrt_count": bound}
        row["one_encryption"] = spread(cfg, args.slots)
        row["fresh_keys"] = largest_over_keys(cfg, args.seconds)
        out[name] = row
        s, k = row["one_encryption"], row["fresh_keys"]
        print(
            f"{name} (N {cfg.poly_modulus_degree}, scale 2^{cfg.scale_bits}), in units of N 2^-scale: "
            f"std {s['std']:.4f}, kurtosis {s['kurtosis']:.2f}, largest {s['max']:.3f} over {s['slots']:,} slots; "
            f"largest {k['max_per_sqrt_count']:.3f} per sqrt(n) over {k['keys']:,} keys ({k['slots']:,} slots); "
            f"bound {bound:g}",
            flush=True,
        )
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
