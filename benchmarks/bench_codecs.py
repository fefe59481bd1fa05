"""Codec cost: encode + serialise + parse + decode time and wire bytes, against float32, in one run.

A 2NN-sized update (199,210 floats) and a CNN-sized one (1,663,370 floats), with McMahan et al.'s
layer shapes and Gaussian values. The baseline is the float32 ``Identity`` stage through the same
path (encode, ``to_bytes``, ``read``, decode), measured in the same run; times are medians.

    python benchmarks/bench_codecs.py                  # both sizes, writes benchmarks/results/codecs.json
    python benchmarks/bench_codecs.py --repeats 3 --models 2nn
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from hamrah.compression import (
    HalfPrecision,
    RandomMask,
    SignEF,
    StochasticQuantizer,
    TopK,
)
from hamrah.core.pipeline import ClientContext, Identity, spec_of
from hamrah.data import load_mnist
from hamrah.models import build_model

CODECS = {
    "float32": Identity(),
    "float16": HalfPrecision("float16"),
    "bfloat16": HalfPrecision("bfloat16"),
    "q8 minmax": StochasticQuantizer(8),
    "q4 minmax": StochasticQuantizer(4),
    "q2 minmax": StochasticQuantizer(2),
    "q8 qsgd b512": StochasticQuantizer(8, "qsgd", bucket=512),
    "q4 qsgd b512": StochasticQuantizer(4, "qsgd", bucket=512),
    "q8 ring": StochasticQuantizer(8, "ring", clip=0.05),
    "sign + EF": SignEF(),
    "top-1% + EF": TopK(0.01),
    "top-1% fp16 + EF": TopK(0.01, value_dtype="float16"),
    "mask 10%": RandomMask(0.1),
}


def make_update(model: str) -> dict[str, torch.Tensor]:
    """Return an update with the model's names and shapes and N(0, 0.01^2) values."""
    net = build_model(model, load_mnist())
    g = torch.Generator().manual_seed(0)
    return {k: torch.randn(v.shape, generator=g) * 0.01 for k, v in net.named_parameters()}


def time_codec(codec, update, repeats: int) -> tuple[float, int]:
    """Return the median seconds of one encode -> bytes -> read -> decode, and the wire bytes."""
    spec, times, nbytes = spec_of(update), [], 0
    state = codec.init_state(update)
    for r in range(repeats + 1):  # the first is a warm-up
        ctx = ClientContext(0, r, np.random.default_rng(r), round_seed=r)
        start = time.perf_counter()
        payload, state = codec.encode(update, state, ctx)
        data = payload.to_bytes()
        codec.decode(codec.read(data, spec))
        if r:
            times.append(time.perf_counter() - start)
        nbytes = len(data)
    return statistics.median(times), nbytes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="2nn,cnn")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--out", default="benchmarks/results/codecs.json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows = []
    for model in args.models.split(","):
        update = make_update(model)
        base_s, base_b = time_codec(CODECS["float32"], update, args.repeats)
        d = sum(v.numel() for v in update.values())
        print(f"\n{model}: {d:,} floats; float32 {base_b:,} bytes, {base_s * 1e3:.1f} ms")
        print("| codec | bytes | vs float32 | ms (enc+ser+parse+dec) | time vs float32 |\n|---|---:|---:|---:|---:|")
        for name, codec in CODECS.items():
            s, b = (base_s, base_b) if name == "float32" else time_codec(codec, update, args.repeats)
            rows.append(
                {
                    "model": model,
                    "floats": d,
                    "codec": name,
                    "bytes": b,
                    "bytes_ratio": b / base_b,
                    "ms": s * 1e3,
                    "time_ratio": s / base_s,
                }
            )
            print(f"| {name} | {b:,} | {b / base_b:.4f} | {s * 1e3:.1f} | {s / base_s:.1f}x |")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "machine": platform.platform(),
        "processor": platform.processor(),
        "torch_threads": 1,
        "repeats": args.repeats,
        "torch": torch.__version__,
        "note": "shared 2-core machine",
    }
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
