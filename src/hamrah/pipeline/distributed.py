"""Distributed DP with secure aggregation: the distributed discrete Gaussian (DDG) stage and its accountant.

Kairouz, Liu, Steinke 2021, *The Distributed Discrete Gaussian Mechanism for Federated Learning with
Secure Aggregation* (ICML). Each client clips, rotates, scales and rounds its update into the integers,
adds discrete Gaussian noise N_Z(0, (sigma / gamma)^2) and reduces it mod 2^b (:mod:`hamrah.secagg.ddg`);
SecAgg sums the vectors in Z_{2^b}; the server decodes only the sum. Nobody (server, other clients) sees
an un-noised sum or a single client's vector: the server sees masked vectors and the noisy sum.

**Noise and drop-outs.** The noise in a sum is that of the clients whose masked input is in it (U3).
Each client adds sigma = z c / sqrt(n_min), so any sum of at least n_min = ``min_contributors`` clients
carries noise of std >= z c (more contributors, more noise). The SecAgg threshold is raised to
t >= n_min, so honest clients refuse to unmask a sum of fewer contributors (full SecAgg: a client checks
|U3| >= t before it reveals a share), and the stage releases nothing in a round that starts with fewer
than n_min clients. The accountant charges every round as a sum of exactly n_min clients' noise.

The accountant (:class:`DistributedRound`, :class:`DistributedAccountant` and the server's ledger) is
in :mod:`hamrah.pipeline.distributed_accounting`; its names are re-exported here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch

from hamrah.core.errors import ConfigError
from hamrah.core.numbers import check_number
from hamrah.core.params import Params
from hamrah.core.pipeline import BaseStage, ClientContext, ServerContext, Spec, Stage, StageTraits, WireWriter, spec_of
from hamrah.pipeline.distributed_accounting import (
    LEDGER_FORMAT,
    ORDERS,
    DistributedAccountant,
    DistributedRound,
    ledger_to_dict,
    restore_ledger,
)
from hamrah.privacy.stages import _require_equal_weights
from hamrah.secagg import ddg
from hamrah.secagg.active import simulated_identities
from hamrah.secagg.config import SecAggConfig
from hamrah.secagg.driver import run_secure_aggregation
from hamrah.secagg.params import flatten_params, unflatten_params
from hamrah.secagg.ring import pack, packed_size
from hamrah.secagg.server import AggregateResult
from hamrah.secagg.stage import check_flag

if TYPE_CHECKING:
    from hamrah.pipeline.sections import SecureSpec
    from hamrah.privacy.config import DPConfig


@dataclass(frozen=True)
class RingPayload:
    """One client's ring vector on the wire: ``bits``-bit values, bit-packed."""

    spec: Spec
    values: np.ndarray
    bits: int
    round_idx: int = 0

    @property
    def nbytes(self) -> int:
        return len(WireWriter(b"DDGR", self.spec).getvalue()) + 1 + 4 + packed_size(len(self.values), self.bits)

    def to_bytes(self) -> bytes:
        w = WireWriter(b"DDGR", self.spec)
        w.pack("BI", self.bits, len(self.values))
        w.raw(pack(self.values.astype(np.uint64), self.bits))
        return w.getvalue()


@dataclass(frozen=True)
class DistributedDiscreteGaussian(BaseStage):
    """Distributed DP: DDG noise on every client, the sum under SecAgg, decoded only as a sum.

    Attributes:
        clip: c, each client's update is clipped to L2 norm c.
        noise_multiplier: z: any released sum carries noise of std >= z c (sigma = z c / sqrt(n_min) each).
        min_contributors: n_min (see the module docstring).
        expected_cohort: the fixed denominator of the mean (McMahan et al. 2018's f_f): m, or q K.
        ring_bits: b, the ring of the secure sum.
        beta: conditional rounding's parameter.
        k_stddevs: how many standard deviations of the sum gamma leaves room for in Z_{2^b}.
        variant: "secagg" only (SecAgg+ clients cannot check the global contributor count).
        malicious_server: the sum runs the actively secure SecAgg (:mod:`hamrah.secagg.active`).
    """

    clip: float = 1.0
    noise_multiplier: float = 1.0
    min_contributors: int = 2
    expected_cohort: float = 2.0
    ring_bits: int = 20
    beta: float = math.exp(-0.5)
    k_stddevs: float = 4.0
    variant: str = "secagg"
    malicious_server: bool = False
    name: str = "ddg"
    traits: ClassVar[StageTraits] = StageTraits("secure_sum", adds_noise_where="client")

    def __post_init__(self) -> None:
        if self.variant != "secagg":
            raise ConfigError(
                f'secure_aggregation.variant = {self.variant!r} with privacy.mode = "distributed": '
                'expected "secagg"; a SecAgg+ client sees only its neighbourhood, so it cannot refuse a '
                "sum of fewer than min_contributors clients, whose noise would then be too small"
            )
        check_flag(self.malicious_server)
        check_number("privacy.noise_multiplier (distributed DP)", self.noise_multiplier, 0.0, open_low=True)
        if not (isinstance(self.min_contributors, int) and self.min_contributors >= 2):
            raise ConfigError(
                f"secure_aggregation.min_contributors = {self.min_contributors!r}: expected an integer >= 2"
            )
        ddg.DDGParams(1, self.clip, 1.0, 0.0, self.ring_bits, self.beta)  # validates clip, ring_bits, beta

    def params(self, dim: int) -> ddg.DDGParams:
        """Return the round's ring settings for updates of ``dim`` coordinates (the same on every side)."""
        sigma = self.noise_multiplier * self.clip / math.sqrt(self.min_contributors)
        padded = 1 << max(0, (dim - 1).bit_length())
        clients = max(math.ceil(self.expected_cohort), self.min_contributors)
        gamma = ddg.choose_gamma(self.clip, sigma, self.ring_bits, clients, padded, self.k_stddevs)
        return ddg.DDGParams(dim, self.clip, gamma, sigma, self.ring_bits, self.beta)

    def secure_length(self, dim: int) -> int:
        """Return the length of a client's ring vector for updates of ``dim`` coordinates: d' (padded)."""
        return self.params(dim).padded_dim

    def config(self, num_clients: int, length: int) -> SecAggConfig:
        """Return the SecAgg settings of a round of ``num_clients`` ring vectors of ``length`` entries.

        The threshold is at least n_min, so honest clients never unmask a sum of fewer contributors.

        Raises:
            ConfigError: fewer than n_min clients (their noise would be too small: nothing is released).
        """
        n = num_clients
        if n < self.min_contributors:
            raise ConfigError(
                f"distributed DP: {n} clients in the round, fewer than secure_aggregation."
                f"min_contributors = {self.min_contributors}; their noise would be too small, so the "
                "round releases nothing"
            )
        return SecAggConfig(
            num_clients=n,
            vector_length=length,
            ring_bits=self.ring_bits,
            prequantized=True,
            threshold=min(n, max(n // 2 + 1, self.min_contributors)),
        )

    def decode_secure(self, result: AggregateResult, dim: int, round_idx: int) -> np.ndarray:
        """Return the float sum of ``dim`` coordinates that a SecAgg result's ring sum stands for."""
        return ddg.decode_sum(result.ring_sum, self.params(dim), _rotation_seed(round_idx))

    def round_mechanism(self, dim: int, sampling_probability: float) -> DistributedRound:
        """Return what one round releases, for the accountant."""
        return DistributedRound(self.params(dim), self.min_contributors, sampling_probability)

    def encode(self, update: Params, state: Any, ctx: ClientContext) -> tuple[RingPayload, Any]:
        _require_equal_weights(ctx, self.name)
        flat, _ = flatten_params(update)
        values = ddg.encode(flat, self.params(len(flat)), _rotation_seed(ctx.round_idx), ctx.rng)
        return RingPayload(spec_of(update), values, self.ring_bits, ctx.round_idx), state

    def decode(self, payload: RingPayload) -> Params:
        """Return one client's noisy vector as the update it stands for (the client's own view: the server
        decodes only sums, :meth:`secure_round`)."""
        layout = flatten_params({k: torch.zeros(s) for k, s in payload.spec})[1]
        flat = ddg.decode_sum(payload.values, self.params(layout.size), _rotation_seed(payload.round_idx))
        return unflatten_params(flat, layout)

    def secure_round(self, payloads: Sequence[RingPayload], ctx: ServerContext) -> tuple[Params, list[int], list[int]]:
        """Sum the clients' ring vectors under SecAgg (t >= n_min) and decode the sum; nothing below n_min."""
        spec = payloads[0].spec
        layout = flatten_params({k: torch.zeros(s) for k, s in spec})[1]
        n = len(payloads)
        if n < self.min_contributors:  # released nothing: the noise of fewer clients would be too small
            return {k: torch.zeros(s) for k, s in spec}, [0] * n, [0] * n
        config = self.config(n, self.secure_length(layout.size))
        seed = int(ctx.rng.integers(2**31))
        run = run_secure_aggregation(
            [p.values for p in payloads],
            config,
            seed=seed,
            round_id=ctx.round_idx,
            identities=simulated_identities(n, seed) if self.malicious_server else None,
        )
        total = self.decode_secure(run.result, layout.size, ctx.round_idx)
        return (
            unflatten_params(total, layout),
            [int(b) for b in run.client_bytes_sent],
            [int(b) for b in run.client_bytes_received],
        )

    def aggregate(self, payloads: Sequence[RingPayload], ctx: ServerContext) -> Params:
        return self.secure_round(payloads, ctx)[0]

    def server(self, aggregate: Params, state: Any, ctx: ServerContext) -> tuple[Params, Any]:
        """Turn the chain's mean over the m' reporting clients into sum / expected cohort (fixed denominator)."""
        scale = ctx.num_clients / self.expected_cohort
        return {k: v * scale for k, v in aggregate.items()}, state


def distributed_stage(
    dp: DPConfig, noise_multiplier: float, cohort: float, secure: SecureSpec | None, codec: Stage | None = None
) -> DistributedDiscreteGaussian:
    """Return the DDG stage of ``[privacy] mode = "distributed"`` with ``[secure_aggregation]``.

    Args:
        dp: the run's :class:`~hamrah.privacy.config.DPConfig`. noise_multiplier: z. cohort: m (or q K).
        secure: the ``[secure_aggregation]`` settings: ``variant``, and optionally ``ring_bits`` (20) and
            ``min_contributors`` (default: half the cohort, at least 2); ``clip`` and ``input_bits`` do not
            apply (the DDG stage clips in L2 and quantizes itself).
        codec: the ``[compression]`` stage, which must be None (the DDG stage is the quantizer).

    Raises:
        ConfigError: no secure aggregation, a codec, a target epsilon, fixed-size sampling or PLD accounting.
    """
    if secure is None:
        raise ConfigError(
            'privacy.mode = "distributed" needs [secure_aggregation]: the clients\' noise protects '
            "only a sum the server cannot see the parts of"
        )
    if codec is not None:
        raise ConfigError(
            'privacy.mode = "distributed" with [compression]: the DDG stage quantizes the update '
            'into the ring itself; expected no [compression] section (or codec = "none")'
        )
    if dp.target_epsilon is not None or dp.noise_multiplier is None:
        raise ConfigError(
            'privacy.mode = "distributed": expected privacy.noise_multiplier and no target_epsilon '
            "(the distributed accountant reports the epsilon spent; calibrating z needs the model's "
            "dimension and is not wired)"
        )
    if dp.sampling != "poisson" or dp.accountant != "rdp":
        raise ConfigError(
            'privacy.mode = "distributed": expected sampling = "poisson" and accountant = '
            '"rdp" (the DDG accountant is Zhu-Wang\'s Poisson-subsampled RDP)'
        )
    n_min = secure.min_contributors or max(2, int(cohort) // 2)
    return DistributedDiscreteGaussian(
        dp.clip,
        float(noise_multiplier),
        int(n_min),
        float(cohort),
        int(secure.ring_bits or 20),
        variant=secure.variant,
        malicious_server=secure.malicious_server,
    )


def distributed_accountant(
    stage: DistributedDiscreteGaussian, template: Params, sampling_probability: float
) -> DistributedAccountant:
    """Return the accountant of a run whose updates are shaped like ``template``."""
    dim = sum(v.numel() for v in template.values())
    return DistributedAccountant(stage.round_mechanism(dim, min(1.0, sampling_probability)))


def calibrate_noise(
    stage: DistributedDiscreteGaussian,
    dim: int,
    sampling_probability: float,
    rounds: int,
    delta: float,
    target_epsilon: float,
    tol: float = 1e-3,
) -> float:
    """Return the smallest z (to ``tol``, relative) at which ``rounds`` rounds of ``stage`` spend <= ``target_epsilon``.

    Raises:
        ConfigError: no z up to 10^4 reaches the target.
    """

    def eps(z: float) -> float:
        acc = DistributedAccountant(replace(stage, noise_multiplier=z).round_mechanism(dim, sampling_probability))
        acc.step(rounds)
        return acc.epsilon(delta)

    low, high = 1e-3, 1.0
    while eps(high) > target_epsilon:
        low, high = high, high * 2
        if high > 1e4:
            raise ConfigError(
                f"distributed DP: no noise multiplier up to 1e4 spends <= {target_epsilon} in {rounds} rounds"
            )
    while high - low > tol * high:
        mid = (low + high) / 2
        low, high = (mid, high) if eps(mid) > target_epsilon else (low, mid)
    return high


def _rotation_seed(round_idx: int) -> int:
    """The public seed of round ``round_idx``'s rotation (the same for its clients and the server)."""
    return int(np.random.SeedSequence([0xDD6, int(round_idx)]).generate_state(1)[0])


__all__ = [
    "LEDGER_FORMAT",
    "ORDERS",
    "DistributedAccountant",
    "DistributedDiscreteGaussian",
    "DistributedRound",
    "RingPayload",
    "calibrate_noise",
    "distributed_accountant",
    "distributed_stage",
    "ledger_to_dict",
    "restore_ledger",
]
