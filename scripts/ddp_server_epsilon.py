"""Print the epsilon of configs/dp_distributed_mnist.toml's 20 rounds as the simulator accounts them
(Poisson sampling q = 0.5) and as the real server does (no sampling amplification: q = 1), and the
noise multiplier the server would need for the simulator's epsilon (docs/distributed_dp.md)."""

from __future__ import annotations

from hamrah.pipeline import SecureSpec
from hamrah.pipeline.distributed import DistributedAccountant, calibrate_noise, distributed_stage
from hamrah.privacy.config import DPConfig

DIM, ROUNDS, DELTA = 7850, 20, 1e-5


def main() -> None:
    dp = DPConfig(mode="distributed", clip=0.5, noise_multiplier=4.25, delta=DELTA, sampling="poisson")
    stage = distributed_stage(dp, 4.25, 50.0, SecureSpec(variant="secagg", ring_bits=20, min_contributors=40))
    out = {}
    for q in (0.5, 1.0):
        acc = DistributedAccountant(stage.round_mechanism(DIM, q))
        acc.step(ROUNDS)
        out[q] = acc.epsilon(DELTA)
        print(f"q = {q}: epsilon {out[q]:.2f} after {ROUNDS} rounds (z = 4.25, n_min = 40, delta = {DELTA})")
    z = calibrate_noise(stage, DIM, 1.0, ROUNDS, DELTA, out[0.5])
    print(f"the server (q = 1) needs z = {z:.2f} for epsilon {out[0.5]:.2f}")


if __name__ == "__main__":
    main()
