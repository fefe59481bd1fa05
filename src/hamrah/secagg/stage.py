"""Secure aggregation as a stage of the client-update pipeline (:mod:`hamrah.core.pipeline`).

The server learns only the sum of the round's updates: each round runs the full protocol of
Bonawitz et al. 2017 (or SecAgg+ of Bell et al. 2020) over the clients' updates, with the same client
and server state machines the benchmarks measure (:func:`run_secure_aggregation`), and the round's
byte report carries the protocol's real wire bytes per client. The protocol runs in one process here
(the simulator); the real server carries the same state machines over gRPC (:mod:`hamrah.server.secure`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from hamrah.core.errors import ConfigError
from hamrah.core.params import Params
from hamrah.core.pipeline import BaseStage, DensePayload, ServerContext, StageTraits
from hamrah.secagg.active import simulated_identities
from hamrah.secagg.config import SecAggConfig, secaggplus_degree
from hamrah.secagg.driver import run_secure_aggregation
from hamrah.secagg.params import flatten_params, unflatten_params

VARIANTS = ("secagg", "secagg+")


def check_flag(value: object) -> None:
    """Raise ConfigError unless ``secure_aggregation.malicious_server`` is a boolean."""
    if not isinstance(value, bool):
        raise ConfigError(f"secure_aggregation.malicious_server = {value!r}: expected true or false")


@dataclass(frozen=True)
class SecureAggregation(BaseStage):
    """The secure-sum stage: clients' updates are masked, the server unmasks only their sum.

    Attributes:
        variant: "secagg" (every pair of clients masks) or "secagg+" (O(log n) neighbours each).
        clip: each coordinate is clipped to [-clip, clip] before fixed-point quantization (the
            pipeline has already scaled a client's update by p_k * m: 1 with equal weights).
        input_bits: bits per quantized coordinate; the ring adds ceil(log2 n) bits so sums cannot wrap.
        ring_bits, min_contributors: settings of distributed DP (``[privacy] mode = "distributed"``,
            :mod:`hamrah.pipeline.distributed`); refused here, where they would mean nothing.
        malicious_server: run the actively secure variant (signed keys and the ConsistencyCheck round,
            :mod:`hamrah.secagg.active`): in simulation with seeded identities, on the real server with
            the devices' provisioned identity keys and certificates.
    """

    variant: str = "secagg"
    clip: float = 1.0
    input_bits: int = 16
    ring_bits: int | None = None
    min_contributors: int | None = None
    malicious_server: bool = False
    name: str = "secagg"
    traits: ClassVar[StageTraits] = StageTraits("secure_sum")

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ConfigError(f"secure_aggregation.variant = {self.variant!r}: expected one of {', '.join(VARIANTS)}")
        if isinstance(self.clip, bool) or not (isinstance(self.clip, (int, float)) and self.clip > 0):
            raise ConfigError(f"secure_aggregation.clip = {self.clip!r}: expected a positive number")
        if isinstance(self.input_bits, bool) or not (isinstance(self.input_bits, int) and 2 <= self.input_bits <= 32):
            raise ConfigError(f"secure_aggregation.input_bits = {self.input_bits!r}: expected an integer in 2..32")
        check_flag(self.malicious_server)
        for key in ("ring_bits", "min_contributors"):
            if getattr(self, key) is not None:
                raise ConfigError(
                    f'secure_aggregation.{key} applies only with privacy.mode = "distributed" '
                    "(distributed DP's ring and noise); expected it unset"
                )

    def secure_length(self, dim: int) -> int:
        """Return the length of a client's input vector for updates of ``dim`` coordinates (``dim`` itself)."""
        return dim

    def decode_secure(self, result, dim: int, round_idx: int) -> np.ndarray:
        """Return the float sum a SecAgg result stands for (its dequantized ``sum``)."""
        return np.asarray(result.sum, dtype=np.float64)

    def config(self, num_clients: int, length: int) -> SecAggConfig:
        """Return the SecAgg settings of a round of ``num_clients`` inputs of ``length`` entries."""
        plus = self.variant == "secagg+" and num_clients > 4
        degree = secaggplus_degree(num_clients) if plus else None
        return SecAggConfig(
            num_clients=num_clients, vector_length=length, clip=self.clip, input_bits=self.input_bits, neighbours=degree
        )

    def identities(self, num_clients: int, seed: int) -> dict[int, bytes] | None:
        """Return simulated identity keys for the in-memory protocol when ``malicious_server`` (else None)."""
        return simulated_identities(num_clients, seed) if self.malicious_server else None

    def aggregate(self, payloads: Sequence[DensePayload], ctx: ServerContext) -> Params:
        return self.secure_round(payloads, ctx)[0]

    def secure_round(self, payloads: Sequence[DensePayload], ctx: ServerContext) -> tuple[Params, list[int], list[int]]:
        """Run one protocol round over the clients' inputs; return the sum and each client's bytes sent and received."""
        flats = [flatten_params(p.params) for p in payloads]
        layout = flats[0][1]
        seed = int(ctx.rng.integers(2**31))
        run = run_secure_aggregation(
            [f for f, _ in flats],
            self.config(len(flats), layout.size),
            seed=seed,
            round_id=ctx.round_idx,
            identities=self.identities(len(flats), seed),
        )
        total = unflatten_params(np.asarray(run.sum, dtype=np.float64), layout)
        return total, [int(b) for b in run.client_bytes_sent], [int(b) for b in run.client_bytes_received]
