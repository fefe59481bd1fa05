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

**Accounting** (Rényi DP, add/remove one client; :class:`DistributedRound`):

- sensitivity: Delta_2 = min(c/gamma + sqrt(d'), sqrt((c/gamma)^2 + d'/4 + sqrt(2 log(1/beta)) (c/gamma +
  sqrt(d')/2))) in ring units, enforced by the conditional rounding (Proposition 22), and
  Delta_1 = Delta_2 min(sqrt(d'), Delta_2);
- one sum of n discrete Gaussians of variance s^2 = (sigma/gamma)^2 each (Theorem 1, Proposition 14):
  eps(alpha) = min(alpha/2 l2^2 + tau d', alpha/2 (l2^2 + 2 l1 tau + tau^2 d'), alpha/2 (l2 + sqrt(d') tau)^2),
  l_p = Delta_p / (sqrt(n) s), tau = 10 sum_{k=1}^{n-1} exp(-2 pi^2 s^2 k / (k + 1));
- Poisson sampling with rate q: the general upper bound for Poisson-subsampled RDP of Zhu and Wang
  2019 (*Poisson Subsampled Rényi Differential Privacy*, ICML), at integer orders 2..256;
- rounds compose additively in RDP; (epsilon, delta) by dp-accounting's RDP conversion (``compute_epsilon``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from dp_accounting.rdp.rdp_privacy_accountant import compute_epsilon
from scipy import special

from hamrah.core.errors import ConfigError, DataError
from hamrah.core.params import Params
from hamrah.core.pipeline import BaseStage, ClientContext, ServerContext, Spec, Stage, StageTraits, WireWriter, spec_of
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

ORDERS = tuple(range(2, 129)) + (256,)
"""Integer Rényi orders (the subsampling bound needs integers)."""


@dataclass(frozen=True)
class DistributedRound:
    """The mechanism one round releases: a Poisson-sampled sum of at least n_min DDG-noised clients.

    Attributes:
        params: the ring settings (clip, gamma, local noise, ring bits, beta, dimension).
        min_contributors: n_min, the fewest clients whose noise is in any released sum.
        sampling_probability: q, each client's chance to be in the round (1: no sampling).
    """

    params: ddg.DDGParams
    min_contributors: int
    sampling_probability: float = 1.0

    def __post_init__(self) -> None:
        if (
            isinstance(self.min_contributors, bool)
            or not isinstance(self.min_contributors, int)
            or self.min_contributors < 1
        ):
            raise ConfigError(f"min_contributors = {self.min_contributors!r}: expected a positive integer")
        if not 0 < self.sampling_probability <= 1:
            raise ConfigError(f"sampling_probability = {self.sampling_probability!r}: expected a number in (0, 1]")

    def scales(self) -> tuple[float, float, float]:
        """Return (l1 scale, l2 scale, tau) of Kairouz et al.'s Theorem 1 for this round."""
        p, n = self.params, self.min_contributors
        s = p.local_stddev / p.gamma
        if s == 0:
            return math.inf, math.inf, 0.0
        l2 = p.l2_bound
        l1 = l2 * min(math.sqrt(p.padded_dim), l2)
        tau = 10 * sum(math.exp(-2 * (math.pi * s) ** 2 * k / (k + 1)) for k in range(1, n))
        return l1 / (math.sqrt(n) * s), l2 / (math.sqrt(n) * s), tau

    def unsampled_rdp(self, order: int) -> float:
        """Return eps(alpha) of one unsampled round (Proposition 14 with Theorem 1's tau)."""
        return float(self._curve()(np.array([order], dtype=np.float64))[0])

    def _curve(self) -> Callable[[np.ndarray], np.ndarray]:
        l1, l2, tau = self.scales()
        d = self.params.padded_dim

        def eps(orders: np.ndarray) -> np.ndarray:
            a = orders / 2
            out: np.ndarray = np.minimum(
                np.minimum(a * l2**2 + tau * d, a * (l2**2 + 2 * l1 * tau + tau**2 * d)),
                a * (l2 + math.sqrt(d) * tau) ** 2,
            )
            return out

        return eps

    def rdp(self, orders: Sequence[int] = ORDERS) -> np.ndarray:
        """Return the RDP of one (sampled) round at ``orders``."""
        q, eps = self.sampling_probability, self._curve()
        plain = eps(np.asarray(orders, dtype=np.float64))
        if q == 1:
            return plain
        out: np.ndarray = np.minimum(np.array([_poisson_subsampled(a, q, eps) for a in orders]), plain)
        return out


def _poisson_subsampled(order: int, q: float, eps: Callable[[np.ndarray], np.ndarray]) -> float:
    """Zhu and Wang 2019's upper bound on the RDP at integer ``order`` of a Poisson(q)-subsampled mechanism.

    ``eps`` maps an array of orders to the unsampled mechanism's RDP at each.
    """
    e2 = float(np.asarray(eps(np.array([2.0])))[0])
    if math.isinf(e2):
        return math.inf
    j = np.arange(3, order + 1, dtype=np.float64)
    log_binom = special.gammaln(order + 1) - special.gammaln(j + 1) - special.gammaln(order - j + 1)
    terms = np.concatenate(
        [[0.0, e2], (j - 1) * np.asarray(eps(j)) + log_binom + (order - j) * math.log1p(-q) + j * math.log(q)]
    )
    coeff = np.concatenate(
        [
            [(1 - q) ** (order - 1) * (order * q - q + 1), special.comb(order, 2) * q**2 * (1 - q) ** (order - 2)],
            np.full(len(j), 3.0),
        ]
    )
    return float(special.logsumexp(terms, b=coeff)) / (order - 1)


class DistributedAccountant:
    """Epsilon of the DDG rounds run so far (same interface as :class:`hamrah.privacy.PrivacyAccountant`).

    Args:
        spec: the round's mechanism.
    """

    def __init__(self, spec: DistributedRound):
        self.spec, self.rounds = spec, 0
        self._rdp = spec.rdp(ORDERS)

    def step(self, rounds: int = 1) -> None:
        """Charge ``rounds`` more rounds."""
        self.rounds += int(rounds)

    def epsilon(self, delta: float, extra_rounds: int = 0) -> float:
        """Return epsilon at ``delta`` after the rounds so far plus ``extra_rounds``."""
        rounds = self.rounds + extra_rounds
        if rounds == 0:
            return 0.0
        return float(compute_epsilon(ORDERS, self._rdp * rounds, delta)[0])


LEDGER_FORMAT = "hamrah-ddg-ledger"


def ledger_to_dict(accountant: DistributedAccountant, delta: float) -> dict[str, Any]:
    """Return what a server keeps of a DDG accountant with its checkpoints (the mechanism and the rounds charged)."""
    return {
        "format": LEDGER_FORMAT,
        "version": 1,
        "delta": float(delta),
        "mechanism": asdict(accountant.spec),
        "rounds_done": accountant.rounds,
        "spent_epsilon": accountant.epsilon(delta),
    }


def restore_ledger(accountant: DistributedAccountant, d: Mapping[str, Any], delta: float, source: str) -> None:
    """Set ``accountant``'s rounds from :func:`ledger_to_dict`'s dict.

    Raises:
        DataError: the entry is not a DDG ledger, is malformed, or its epsilon disagrees with its rounds.
        ConfigError: it was written for another mechanism or delta (a new budget needs a new state folder).
    """
    if not isinstance(d, dict) or d.get("format") != LEDGER_FORMAT or d.get("version") != 1:
        raise DataError(
            f"{source}: the privacy ledger is not a distributed-DP ledger (format {LEDGER_FORMAT!r}); "
            "expected the entry this server wrote"
        )
    saved, want = d.get("mechanism"), json.loads(json.dumps(asdict(accountant.spec)))
    if saved != want or d.get("delta") != float(delta):
        raise ConfigError(
            f"{source}: the saved distributed-DP mechanism or delta differs from the configured one; "
            "expected the same (a new budget needs a new --state)"
        )
    rounds = d.get("rounds_done")
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 0:
        raise DataError(f"{source}: corrupt privacy ledger: rounds_done = {rounds!r}, expected an integer >= 0")
    accountant.rounds = rounds
    if not math.isclose(accountant.epsilon(delta), float(d.get("spent_epsilon", -1.0)), rel_tol=1e-6, abs_tol=1e-9):
        raise DataError(
            f"{source}: corrupt privacy ledger: stored spent epsilon {d.get('spent_epsilon')!r} but "
            f"{rounds} rounds give {accountant.epsilon(delta):.6g}"
        )


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
        if not (math.isfinite(self.noise_multiplier) and self.noise_multiplier > 0):
            raise ConfigError(
                f"privacy.noise_multiplier = {self.noise_multiplier!r}: expected a positive number for distributed DP"
            )
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
