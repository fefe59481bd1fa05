"""The ring arithmetic of the distributed discrete Gaussian mechanism (client encode, server decode).

Kairouz, Liu, Steinke 2021, *The Distributed Discrete Gaussian Mechanism for Federated Learning with
Secure Aggregation* (ICML), Algorithms 1 and 2. A client turns its update x (R^d) into a vector of Z_{2^b}:

1. clip: x <- x min(1, c / ||x||_2);
2. flatten: pad to d' = 2^ceil(log2 d) and rotate, x <- H D x / sqrt(d') (D a diagonal of random signs,
   H the Walsh-Hadamard matrix; an orthogonal map, so norms are kept and coordinates become small);
3. scale by 1/gamma and round *conditionally*: randomized rounding (each coordinate up with probability
   its fractional part) repeated until ||z||_2 <= Delta_2 (:func:`rounded_l2_bound`, the paper's
   Proposition 22 with the failure probability beta): the sensitivity the accountant assumes holds for
   every output, not only with high probability;
4. add discrete Gaussian noise N_Z(0, (sigma / gamma)^2) in every coordinate (Canonne, Kamath, Steinke
   2020, Algorithm 3);
5. reduce mod 2^b: the secure sum adds the vectors in Z_{2^b}.

The server maps the ring sum to [-2^(b-1), 2^(b-1)) (modular clipping), multiplies by gamma and rotates
back. The rotation's signs are public randomness shared by the round's clients (a seed), not a secret.

Deviation from the paper: the samplers use float64 arithmetic and the client's numpy generator, not the
exact rational arithmetic and a cryptographic source Canonne et al. recommend against floating-point attacks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from hamrah.core.errors import ConfigError, ProtocolError
from hamrah.core.numbers import check_number


@dataclass(frozen=True)
class DDGParams:
    """The settings one round's clients and server share.

    Attributes:
        dim: d, coordinates of an update (before padding).
        clip: c, the L2 norm each update is clipped to.
        gamma: the granularity: one ring unit is gamma in update units (scale 1/gamma).
        local_stddev: sigma, each client's noise std in update units (sigma / gamma ring units).
        ring_bits: b, the secure sum is taken in Z_{2^b}.
        beta: the conditional rounding's parameter in [0, 1): Delta_2 grows as beta shrinks; 0 uses the
            unconditional bound c/gamma + sqrt(d').

    Raises:
        ConfigError: a value out of range.
    """

    dim: int
    clip: float
    gamma: float
    local_stddev: float
    ring_bits: int = 20
    beta: float = math.exp(-0.5)

    def __post_init__(self) -> None:
        if isinstance(self.dim, bool) or not isinstance(self.dim, int) or self.dim < 1:
            raise ConfigError(f"distributed DP: dim = {self.dim!r}: expected a positive integer")
        for key in ("clip", "gamma"):
            check_number(f"distributed DP: {key}", getattr(self, key), 0.0, open_low=True)
        check_number("distributed DP: local_stddev", self.local_stddev, 0.0)
        if isinstance(self.ring_bits, bool) or not isinstance(self.ring_bits, int) or not 2 <= self.ring_bits <= 62:
            raise ConfigError(f"distributed DP: ring_bits = {self.ring_bits!r}: expected an integer in 2..62")
        check_number("distributed DP: beta", self.beta, 0.0, 1.0, open_high=True)

    @property
    def padded_dim(self) -> int:
        """d' = 2^ceil(log2 d), the length of the rotated vector."""
        return 1 << max(0, (self.dim - 1).bit_length())

    @property
    def l2_bound(self) -> float:
        """Delta_2 in ring units: the most ||z||_2 of a client's rounded vector can be (enforced)."""
        return rounded_l2_bound(self.clip / self.gamma, self.beta, self.padded_dim)


def rounded_l2_bound(norm: float, beta: float, dim: int) -> float:
    """Return the L2 bound after conditional randomized rounding (Kairouz et al. 2021, Proposition 22).

    min(norm + sqrt(d), sqrt(norm^2 + d/4 + sqrt(2 log(1/beta)) (norm + sqrt(d)/2))); beta = 0 gives the first.

    Args:
        norm: the L2 norm of the vector before rounding (in ring units). beta: in [0, 1). dim: d.
    """
    loose = norm + math.sqrt(dim)
    if beta == 0:
        return loose
    tight = math.sqrt(norm**2 + dim / 4 + math.sqrt(2 * math.log(1 / beta)) * (norm + math.sqrt(dim) / 2))
    return min(loose, tight)


def choose_gamma(
    clip: float, local_stddev: float, ring_bits: int, clients: int, dim: int, k_stddevs: float = 4.0
) -> float:
    """Return gamma so that k standard deviations of the sum of ``clients`` noisy vectors fit Z_{2^b}.

    Kairouz et al. 2021, Section 4.4 (a flat rotated vector of norm c has coordinates ~ c / sqrt(d); the
    sum of n has at most n c / sqrt(d) of signal, n (sigma^2 + gamma^2 / 4) of noise and rounding variance):
    2^b = 2 k sqrt(n^2 c^2 / d + n sigma^2 + n gamma^2 / 4) / gamma.

    Raises:
        ConfigError: 2^b is too small to hold k standard deviations of even the rounding of n clients.
    """
    room = 4.0**ring_bits - clients * k_stddevs**2
    if room <= 0:
        raise ConfigError(
            f"distributed DP: a {ring_bits}-bit ring cannot hold {k_stddevs:g} standard deviations of "
            f"{clients} clients' rounding; expected more bits or fewer clients"
        )
    return 2 * k_stddevs * math.sqrt(clients**2 * clip**2 / dim + clients * local_stddev**2) / math.sqrt(room)


def fwht(x: np.ndarray) -> np.ndarray:
    """Return the orthonormal Walsh-Hadamard transform of ``x`` (length a power of two); it is its own inverse."""
    n = x.shape[-1]
    if n & (n - 1):
        raise ValueError(f"the Walsh-Hadamard transform needs a power-of-two length, got {n}")
    y = np.array(x, dtype=np.float64)
    h = 1
    while h < n:
        y = y.reshape(-1, 2 * h)
        a = y[:, :h].copy()
        y[:, :h] += y[:, h:]
        y[:, h:] = a - y[:, h:]
        h *= 2
    return y.reshape(n) / math.sqrt(n)


def _signs(n: int, seed: int) -> np.ndarray:
    return np.where(np.random.default_rng(np.random.SeedSequence([int(seed), 0xDD6])).random(n) < 0.5, -1.0, 1.0)


def rotate(x: np.ndarray, seed: int, padded_dim: int) -> np.ndarray:
    """Return H D [x, 0...] / sqrt(d'): pad to ``padded_dim``, flip signs drawn from ``seed``, transform."""
    y = np.zeros(padded_dim)
    y[: len(x)] = x
    return fwht(y * _signs(padded_dim, seed))


def unrotate(y: np.ndarray, seed: int, dim: int) -> np.ndarray:
    """Invert :func:`rotate` and drop the padding: the first ``dim`` coordinates of D H y / sqrt(d')."""
    return (fwht(y) * _signs(len(y), seed))[:dim]


def conditional_round(z: np.ndarray, bound: float, rng: np.random.Generator, max_tries: int = 1000) -> np.ndarray:
    """Round each coordinate up with probability its fractional part, again until ||out||_2 <= ``bound``.

    Raises:
        ProtocolError: no rounding within ``bound`` in ``max_tries`` draws (the bound is below ||z||_2 + the
            rounding's typical growth: a wrong beta or clip).
    """
    low = np.floor(z)
    frac = z - low
    for _ in range(max_tries):
        out = low + (rng.random(z.shape) < frac)
        if np.linalg.norm(out) <= bound:
            return out.astype(np.int64)
    raise ProtocolError(
        f"conditional rounding: no rounding of a vector of norm {np.linalg.norm(z):.4g} within "
        f"{bound:.4g} in {max_tries} draws; expected a larger beta or a smaller clip / gamma"
    )


def discrete_gaussian(sigma: float, size: int, rng: np.random.Generator) -> np.ndarray:
    """Sample ``size`` i.i.d. N_Z(0, sigma^2): P(x) proportional to exp(-x^2 / (2 sigma^2)) on the integers.

    Canonne, Kamath, Steinke 2020 (*The Discrete Gaussian for Differential Privacy*), Algorithm 3: draw a
    discrete Laplace Y with scale t = floor(sigma) + 1 (the difference of two geometric variables), keep it
    with probability exp(-(|Y| - sigma^2 / t)^2 / (2 sigma^2)).
    """
    if sigma == 0:
        return np.zeros(size, dtype=np.int64)
    t = math.floor(sigma) + 1
    p = -math.expm1(-1.0 / t)
    out = np.empty(size, dtype=np.int64)
    todo = np.arange(size)
    while len(todo):
        y = (rng.geometric(p, len(todo)) - rng.geometric(p, len(todo))).astype(np.int64)
        keep = rng.random(len(todo)) < np.exp(-((np.abs(y) - sigma**2 / t) ** 2) / (2 * sigma**2))
        out[todo[keep]] = y[keep]
        todo = todo[~keep]
    return out


def to_ring(z: np.ndarray, bits: int) -> np.ndarray:
    """Return the integers ``z`` mod 2^bits as uint64."""
    return (np.asarray(z, dtype=np.int64).astype(np.uint64)) & np.uint64((1 << bits) - 1)


def from_ring(r: np.ndarray, bits: int) -> np.ndarray:
    """Return ring elements as the integers in [-2^(bits-1), 2^(bits-1)) they stand for (modular clipping)."""
    r = np.asarray(r).astype(np.int64) & ((1 << bits) - 1)
    return np.where(r >= (1 << (bits - 1)), r - (1 << bits), r)


def encode(x: np.ndarray, params: DDGParams, rotation_seed: int, rng: np.random.Generator) -> np.ndarray:
    """Return a client's ring vector: clip, rotate, scale, round within Delta_2, add N_Z noise, reduce mod 2^b.

    Args:
        x: the update, ``params.dim`` finite floats.
        params: the round's settings.
        rotation_seed: the seed of the rotation's signs, shared by the round's clients.
        rng: this client's generator (rounding and noise).

    Raises:
        ProtocolError: ``x`` has the wrong shape or non-finite values.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.shape != (params.dim,) or not np.all(np.isfinite(x)):
        raise ProtocolError(f"distributed DP: update of shape {x.shape}, expected ({params.dim},) finite floats")
    norm = float(np.linalg.norm(x))
    if norm > params.clip:
        x = x * (params.clip / norm)
    z = conditional_round(rotate(x, rotation_seed, params.padded_dim) / params.gamma, params.l2_bound, rng)
    noise = discrete_gaussian(params.local_stddev / params.gamma, params.padded_dim, rng)
    return to_ring(z + noise, params.ring_bits)


def decode_sum(ring_sum: np.ndarray, params: DDGParams, rotation_seed: int) -> np.ndarray:
    """Return the float sum (d coordinates) the ring sum of the clients' :func:`encode` outputs stands for."""
    return unrotate(from_ring(ring_sum, params.ring_bits) * params.gamma, rotation_seed, params.dim)
