"""The settings of one secure-aggregation round (SecAgg or SecAgg+)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from hamrah.core.errors import ConfigError
from hamrah.core.numbers import check_number


@dataclass(frozen=True)
class SecAggConfig:
    """Settings shared by the server and every client of one secure-aggregation round.

    Bonawitz et al. 2017 (CCS) when ``neighbours`` is None (every pair of clients masks); SecAgg+ of
    Bell et al. 2020 (CCS, *Secure Single-Server Aggregation with (Poly)Logarithmic Overhead*) when
    ``neighbours = k``: each client masks with, and shares its secrets among, k neighbours.

    Args:
        num_clients: n, the clients that start the round.
        vector_length: m, entries per input vector.
        threshold: t, shares needed to rebuild a secret; every surviving client needs t surviving holders
            of its shares (itself and its neighbours) at each stage. Default: a majority of the holders.
        clip: inputs are clipped to [-clip, clip] before quantization.
        input_bits: b, bits per quantized input entry.
        ring_bits: k, the ring is Z_{2^k}; default b + ceil(log2 n), the least that cannot overflow.
        neighbours: None for SecAgg (complete graph); an even degree k < n - 1 for SecAgg+.
        prequantized: inputs are already ring elements (unsigned integers in [0, 2^k)), e.g. the noisy
            integer vectors of distributed DP (:mod:`hamrah.secagg.ddg`): no clipping or quantization, and
            the sum is taken mod 2^k on purpose (modular clipping), so ``ring_bits`` must be given and no
            overflow check applies; the result's ``sum`` is then the ring sum itself.

    Raises:
        ConfigError: a value is out of range, or n clients' b-bit inputs could overflow Z_{2^k}.
    """

    num_clients: int
    vector_length: int
    threshold: int | None = None
    clip: float = 1.0
    input_bits: int = 16
    ring_bits: int | None = None
    neighbours: int | None = None
    prequantized: bool = False

    def __post_init__(self):
        n = self.num_clients
        if isinstance(n, bool) or not isinstance(n, int) or n < 2:
            raise ConfigError(f"num_clients must be an integer >= 2, got {n!r}")
        if not isinstance(self.vector_length, int) or self.vector_length < 1:
            raise ConfigError(f"vector_length must be a positive integer, got {self.vector_length!r}")
        check_number("clip", self.clip, 0.0, open_low=True)
        if not isinstance(self.input_bits, int) or not 1 <= self.input_bits <= 62:
            raise ConfigError(f"input_bits must be an integer in [1, 62], got {self.input_bits!r}")
        self._check_neighbours()
        if self.prequantized not in (True, False):
            raise ConfigError(f"prequantized must be True or False, got {self.prequantized!r}")
        if self.prequantized and self.ring_bits is None:
            raise ConfigError("prequantized inputs need ring_bits: the ring Z_2^k they are elements of")
        if self.ring_bits is None:
            object.__setattr__(self, "ring_bits", self.input_bits + math.ceil(math.log2(n)))
        self._check_ring()
        if self.threshold is None:
            object.__setattr__(self, "threshold", self.holders // 2 + 1)
        t = self.threshold
        if isinstance(t, bool) or not isinstance(t, int) or not 1 <= t <= self.holders:
            raise ConfigError(
                f"threshold must be an integer in [1, {self.holders}] (the holders of each client's shares), got {t!r}"
            )

    def _check_neighbours(self) -> None:
        k = self.neighbours
        if k is None:
            return
        if isinstance(k, bool) or not isinstance(k, int) or k < 2 or k % 2 or k >= self.num_clients - 1:
            raise ConfigError(
                f"neighbours (SecAgg+ degree) must be an even integer in [2, {self.num_clients - 2}] "
                f"for {self.num_clients} clients, or None for full SecAgg; got {k!r}"
            )

    def _check_ring(self) -> None:
        k, b, n = self.ring_bits, self.input_bits, self.num_clients
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= 64:
            raise ConfigError(f"ring_bits must be an integer in [1, 64], got {k!r}")
        if not self.prequantized and n * ((1 << b) - 1) > (1 << k) - 1:
            need = (n * ((1 << b) - 1)).bit_length()
            raise ConfigError(
                f"the sum of {n} clients' {b}-bit inputs needs {need} bits but the ring Z_2^{k} "
                f"has {k}: raise ring_bits to >= {need}, or lower input_bits or num_clients"
            )

    @property
    def holders(self) -> int:
        """Clients holding shares of one client's secrets: all n, or the client and its k neighbours."""
        return self.num_clients if self.neighbours is None else self.neighbours + 1

    @property
    def variant(self) -> str:
        """``"secagg"`` or ``"secagg+"``."""
        return "secagg" if self.neighbours is None else "secagg+"

    @property
    def step(self) -> float:
        """The quantization step 2 clip / (2^b - 1); an entry's rounding error is at most half of it."""
        return 2.0 * self.clip / ((1 << self.input_bits) - 1)


def secaggplus_degree(num_clients: int, factor: float = 2.0) -> int:
    """Return an even SecAgg+ degree about ``factor * log2(n)`` (Bell et al. 2020: k = O(log n)), below n - 1."""
    k = 2 * math.ceil(factor * math.log2(num_clients) / 2)
    return max(2, min(k, (num_clients - 2) // 2 * 2))
