"""CPU cost of bounded influence per round: 100 CNN-sized reports through the server's per-report path
(safetensors decode + shape/dtype/finiteness check), then the norm (float64) and, for the reports over
the bound, the clip. CPU time (``time.process_time``), so the figure holds on a busy machine.

    python benchmarks/bench_influence.py --reports 100 --model cnn
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from hamrah.data import load_mnist
from hamrah.models import build_model
from hamrah.privacy.mechanisms import l2_norm
from hamrah.server.influence import AdaptiveClip, InfluenceBound
from hamrah.transport.codec import check_update, decode_params, encode_params, spec_of


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reports", type=int, default=100)
    p.add_argument("--model", default="cnn", choices=["2nn", "cnn"])
    args = p.parse_args()
    torch.set_num_threads(1)
    params = {k: v.detach() for k, v in build_model(args.model, load_mnist()).named_parameters()}
    spec = spec_of(params)
    g = torch.Generator().manual_seed(0)
    payloads = [
        encode_params({k: torch.randn(v.shape, generator=g) * (1e-3 if i % 2 else 1.0) for k, v in params.items()})
        for i in range(args.reports)
    ]
    t0 = time.process_time()
    deltas = []
    for data in payloads:
        d = decode_params(data)
        check_update(d, spec)
        deltas.append(d)
    t_decode = time.process_time() - t0
    clip = AdaptiveClip(2.0)
    t0 = time.process_time()
    clipped = 0
    for d in deltas:
        norm = l2_norm(d)
        clip.observe(norm)
        bound = clip.clip()
        if norm > bound:
            InfluenceBound(10**6, bound).bound(d)
            clipped += 1
    t_bound = time.process_time() - t0
    print(
        json.dumps(
            {
                "model": args.model,
                "reports": args.reports,
                "parameters": sum(v.numel() for v in params.values()),
                "decode_and_check_cpu_s": round(t_decode, 3),
                "norm_and_clip_cpu_s": round(t_bound, 3),
                "clipped": clipped,
                "ratio": round(t_bound / t_decode, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
