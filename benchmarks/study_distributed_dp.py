"""Distributed DP (DDG under SecAgg) against central DP-FedAvg on MNIST, at the same noise and the same epsilon.

FedAvg, logistic regression, MNIST split IID over 100 clients, E = 1, B = 10, lr 0.1, Poisson sampling
q = 0.5 (about 50 clients a round), 20 rounds, clip 0.5, delta 1e-5, seed 0. Cells:

- ``central``: central DP-FedAvg at z = 2.5 (dp-accounting's RDP accountant);
- ``ddg_same_z``: distributed DP at the same z = 2.5 (n_min = 40): the mechanism's accuracy cost alone;
- ``ddg_same_eps``: distributed DP at the z whose DDG accounting spends the central cell's epsilon
  (:func:`hamrah.pipeline.distributed.calibrate_noise`), n_min = 40;
- ``ddg_same_eps_nmin25``: the same with n_min = 25: each client adds noise for a sum of only 25, so a
  sum of ~50 carries sqrt(2) x the noise (the price of tolerating more drop-outs);
- ``none``: no DP.

Each cell appends one JSON line to ``benchmarks/results/distributed_dp.jsonl``; one cell takes about a
minute of CPU time (``--cell NAME``; without it, all cells one after the other).

    .venv/bin/python benchmarks/study_distributed_dp.py --cell central
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from hamrah.experiments.config import from_dict
from hamrah.experiments.runner import prepare
from hamrah.pipeline.distributed import DistributedDiscreteGaussian, calibrate_noise
from hamrah.privacy.accounting import PrivacyAccountant, RoundSpec

OUT = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "distributed_dp.jsonl"
ROUNDS, Q, CLIP, DELTA, Z_CENTRAL, DIM, COHORT = 20, 0.5, 0.5, 1e-5, 2.5, 7850, 50


def central_epsilon() -> float:
    acc = PrivacyAccountant(RoundSpec.poisson(Z_CENTRAL, Q))
    acc.step(ROUNDS)
    return acc.epsilon(DELTA)


def same_eps_z(n_min: int) -> float:
    stage = DistributedDiscreteGaussian(
        clip=CLIP, noise_multiplier=1.0, min_contributors=n_min, expected_cohort=COHORT, ring_bits=20
    )
    return calibrate_noise(stage, DIM, Q, ROUNDS, DELTA, central_epsilon())


def cell_settings(cell: str) -> tuple[dict | None, dict | None]:
    ddg = lambda z, n: (
        {"mode": "distributed", "clip": CLIP, "noise_multiplier": z, "delta": DELTA},
        {"variant": "secagg", "ring_bits": 20, "min_contributors": n},
    )
    cells = {
        "none": lambda: (None, None),
        "central": lambda: ({"mode": "central", "clip": CLIP, "noise_multiplier": Z_CENTRAL, "delta": DELTA}, None),
        "ddg_same_z": lambda: ddg(Z_CENTRAL, 40),
        "ddg_same_eps": lambda: ddg(same_eps_z(40), 40),
        "ddg_same_eps_nmin25": lambda: ddg(same_eps_z(25), 25),
    }
    return cells[cell]()


def run(cell: str) -> dict:
    privacy, secure = cell_settings(cell)
    d = {
        "data": {"dataset": "mnist", "partition": "iid", "num_clients": 100},
        "model": {"name": "logreg"},
        "algorithm": {"name": "fedavg", "client_fraction": Q, "local_epochs": 1, "batch_size": 10, "lr": 0.1},
        "run": {"rounds": ROUNDS, "seed": 0, "eval_every": ROUNDS},
    }
    if privacy is not None:
        d["privacy"] = privacy
    if secure is not None:
        d["secure_aggregation"] = secure
    start = time.process_time()
    last = prepare(from_dict(d)).simulator().run().history[-1]
    row = {
        "cell": cell,
        "noise_multiplier": None if privacy is None else privacy["noise_multiplier"],
        "min_contributors": None if secure is None else secure["min_contributors"],
        "epsilon": last.epsilon,
        "accuracy": last.test_accuracy,
        "cpu_s": round(time.process_time() - start, 1),
    }
    with OUT.open("a") as f:
        f.write(json.dumps(row) + "\n")
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cell", choices=["none", "central", "ddg_same_z", "ddg_same_eps", "ddg_same_eps_nmin25"])
    args = parser.parse_args()
    for cell in [args.cell] if args.cell else ["none", "central", "ddg_same_z", "ddg_same_eps", "ddg_same_eps_nmin25"]:
        print(json.dumps(run(cell)), flush=True)


if __name__ == "__main__":
    main()
