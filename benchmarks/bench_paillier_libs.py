"""Paillier implementations side by side, per CPU-second on one thread: which one vertical FL uses.

- ``phe`` + ``gmpy2`` as shipped (``raw_encrypt``: ``r^n mod n^2`` per value; CRT ``raw_decrypt``);
- ``hamrah.vertical.he`` (phe's keys + gmpy2, DJN short-exponent encryption from a fixed-base table,
  bucket multi-exponentiation for ``X^T [[d]]``), and ``hamrah.vertical.he_ou`` (Okamoto-Uchiyama on
  the same tables and multi-exponentiation, modulo ``n`` instead of ``n^2``);
- SecretFlow's ``sf-heu`` ZPaillier and OU, when importable (not a hamrah dependency: install it
  beside, e.g. ``pip install --no-deps --target /tmp/heu sf-heu`` and run with ``PYTHONPATH=/tmp/heu``);
  ``ipcl-python`` has no wheel on PyPI for this platform (``pip download ipcl-python`` finds none).

Operations per CPU-second (``time.process_time``) on vectors of ``--n`` values: encrypt, decrypt,
add two ciphertexts, multiply a ciphertext by a signed 28-bit plaintext (what a gradient ``X^T [[d]]``
needs; for hamrah also the per-entry cost inside ``matvec``). Writes
``benchmarks/results/paillier_libs.json``.

    PYTHONPATH=/tmp/heu python benchmarks/bench_paillier_libs.py --bits 2048 --n 200
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import gmpy2
import numpy as np

from hamrah.vertical import he, he_ou


def _rate(fn, count: int) -> float:
    start = time.process_time()
    fn()
    return count / max(time.process_time() - start, 1e-9)


def bench_phe(bits: int, xs: list[int], ks: list[int]) -> dict:
    from phe import paillier

    pub, priv = paillier.generate_paillier_keypair(n_length=bits)
    nsq = gmpy2.mpz(pub.nsquare)
    box = {}
    out = {"encrypt": _rate(lambda: box.setdefault("c", [gmpy2.mpz(pub.raw_encrypt(x % pub.n)) for x in xs]), len(xs))}
    cs = box["c"]
    out["add"] = _rate(lambda: [a * b % nsq for a, b in zip(cs, cs)], len(xs))
    out["mul_plain"] = _rate(
        lambda: [
            gmpy2.powmod(c, k, nsq) if k >= 0 else gmpy2.powmod(gmpy2.invert(c, nsq), -k, nsq) for c, k in zip(cs, ks)
        ],
        len(xs),
    )
    out["decrypt"] = _rate(lambda: [priv.raw_decrypt(int(c)) for c in cs], len(xs))
    return out


def bench_hamrah(bits: int, xs: list[int], ks: list[int], scheme=he) -> dict:
    """``scheme``: :mod:`hamrah.vertical.he` (Paillier) or :mod:`hamrah.vertical.he_ou` (OU); the
    generic ``add``, ``mul_plain`` and ``matvec`` of ``he`` serve both."""
    pub, sec = scheme.keygen(bits)
    box = {}
    out = {"encrypt": _rate(lambda: box.setdefault("c", scheme.encrypt(pub, xs)), len(xs))}
    c = box["c"]
    out["add"] = _rate(lambda: he.add(c, c), len(xs))
    out["mul_plain"] = _rate(lambda: he.mul_plain(c, ks), len(xs))
    matrix = np.array([ks] * 4)
    out["matvec_entry"] = _rate(lambda: he.matvec(matrix, c), matrix.size)
    out["decrypt"] = _rate(lambda: box.setdefault("d", scheme.decrypt(sec, c)), len(xs))
    assert box["d"] == xs
    return out


def bench_heu(bits: int, xs: list[int], ks: list[int], schema: str) -> dict:
    from heu import numpy as hnp
    from heu import phe

    kit = hnp.setup(getattr(phe.SchemaType, schema), bits)
    enc = phe.IntegerEncoder(getattr(phe.SchemaType, schema))
    plain = kit.array(np.array(xs, dtype=np.int64), enc)
    factors = kit.array(np.array(ks, dtype=np.int64), enc)
    box = {}
    out = {"encrypt": _rate(lambda: box.setdefault("c", kit.encryptor().encrypt(plain)), len(xs))}
    c, ev = box["c"], kit.evaluator()
    out["add"] = _rate(lambda: ev.add(c, c), len(xs))
    out["mul_plain"] = _rate(lambda: ev.mul(c, factors), len(xs))
    out["decrypt"] = _rate(lambda: kit.decryptor().decrypt(c), len(xs))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bits", type=int, default=2048)
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--out", default="benchmarks/results/paillier_libs.json")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    xs = [int(v) for v in rng.integers(-(2**40), 2**40, size=args.n)]
    ks = [int(v) for v in rng.integers(-(2**27), 2**27, size=args.n)]
    results = {
        "phe+gmpy2": bench_phe(args.bits, xs, ks),
        "hamrah.vertical.he": bench_hamrah(args.bits, xs, ks),
        "hamrah.vertical.he_ou (OU)": bench_hamrah(args.bits, xs, ks, he_ou),
    }
    try:
        import os

        import heu  # noqa: F401

        os.environ.setdefault("OMP_NUM_THREADS", "1")
        for schema in ("ZPaillier", "OU"):
            results[f"sf-heu {schema}"] = bench_heu(args.bits, xs, ks, schema)
    except ImportError:
        results["sf-heu"] = "not installed"
    print(f"{args.bits}-bit keys, {args.n} values, operations per CPU-second (one thread)")
    print(
        f"{'library':28s}" + "".join(f"{op:>14s}" for op in ("encrypt", "add", "mul_plain", "matvec_entry", "decrypt"))
    )
    for name, r in results.items():
        if isinstance(r, dict):
            print(
                f"{name:28s}"
                + "".join(
                    f"{r.get(op, float('nan')):14.0f}"
                    for op in ("encrypt", "add", "mul_plain", "matvec_entry", "decrypt")
                )
            )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"bits": args.bits, "n": args.n, "results": results}, indent=2))


if __name__ == "__main__":
    main()
