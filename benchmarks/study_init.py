"""Does the weight initialisation explain the 2NN's rounds-to-97% gap with McMahan et al. 2017?

hamrah's 2NN reaches 97% in 2.3x (IID) and 3.9x (non-IID) fewer rounds than the paper reports
(docs/reproduction.md). This reruns those cells (FedAvg, C = 0.1, E = 1, B = 10, seed 0) with three
initialisations of the same model:

- ``pytorch``: torch's default for ``nn.Linear`` (weights and biases U(+-1/sqrt(fan_in))), hamrah's;
- ``glorot``: Glorot-uniform weights, zero biases (TensorFlow's default for dense layers);
- ``tf-tutorial``: truncated-normal weights with std 0.1 and biases 0.1 (TensorFlow's 2016 MNIST
  tutorials).

Each run stops at 97% or the cap; rounds-to-target as the paper computes it. Appends one JSON line
per run to ``--out`` as it finishes (``benchmarks/results/study_init.jsonl``).

    python benchmarks/study_init.py
    python benchmarks/study_init.py --partitions iid --lrs 0.1
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch import nn

from hamrah.algorithms import FedAvg, LocalSGD
from hamrah.core.targets import rounds_to_target
from hamrah.data import federate, load_mnist
from hamrah.models import build_model
from hamrah.simulation import SimulationConfig, Simulator, seeded

INITS = ("pytorch", "glorot", "tf-tutorial")


def initialise(model: nn.Module, how: str) -> nn.Module:
    """Re-initialise ``model``'s linear layers in place (``pytorch`` leaves torch's default)."""
    with torch.no_grad():
        for layer in model.modules():
            if not isinstance(layer, nn.Linear) or how == "pytorch":
                continue
            if how == "glorot":
                nn.init.xavier_uniform_(layer.weight)
                nn.init.zeros_(layer.bias)
            else:
                nn.init.trunc_normal_(layer.weight, std=0.1, a=-0.2, b=0.2)
                nn.init.constant_(layer.bias, 0.1)
    return model


def run(ds, partition: str, init: str, lr: float, cap: int) -> dict:
    fed = federate(ds, partition, 100, seed=0, shards_per_client=2)
    model = seeded(lambda: initialise(build_model("2nn", ds), init), 0)
    cfg = SimulationConfig(rounds=cap, eval_every=1, target_accuracy=0.97, stop_at_target=True)
    start = time.perf_counter()
    history = Simulator(model, fed, FedAvg(0.1, LocalSGD(1, 10, lr)), cfg).run().history
    rounds, accs = [h.round for h in history], [h.test_accuracy for h in history]
    return {
        "partition": partition,
        "init": init,
        "lr": lr,
        "cap": cap,
        "rounds_run": rounds[-1],
        "best_accuracy": max(accs),
        "rounds_to_97": rounds_to_target(rounds, accs, 0.97),
        "wall_s": time.perf_counter() - start,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--partitions", default="iid,shards")
    p.add_argument("--inits", default=",".join(INITS))
    p.add_argument("--lrs", default="0.0464,0.1,0.215")
    p.add_argument("--cap-iid", type=int, default=400)
    p.add_argument("--cap-noniid", type=int, default=1000)
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "study_init.jsonl"))
    args = p.parse_args()
    ds = load_mnist()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for partition in args.partitions.split(","):
        for init in args.inits.split(","):
            for lr in (float(v) for v in args.lrs.split(",")):
                row = run(ds, partition, init, lr, args.cap_iid if partition == "iid" else args.cap_noniid)
                with out.open("a") as f:
                    f.write(json.dumps(row) + "\n")
                print(
                    f"{partition:6s} {init:12s} lr {lr:<7g} rounds to 97%: {row['rounds_to_97']} "
                    f"(best {row['best_accuracy']:.4f}, {row['rounds_run']} rounds, {row['wall_s']:.0f} s)",
                    flush=True,
                )


if __name__ == "__main__":
    main()
