"""Shamir t-of-n secret sharing over the prime field GF(2^256 + 297).

Shamir, *How to Share a Secret*, CACM 1979; used by Bonawitz et al. 2017 (CCS) to share each client's
mask seed ``b_u`` and mask key ``s_u^SK``.

Written here rather than taken from a library: the maintained Python options either share only
small integers or passwords (``secretsharing``, ``pyseltongue``: unmaintained since 2017), or work
over GF(2^8) byte-wise (``sslib``, ``shamir-mnemonic``), which gives shares as long as the secret per
byte and no batch interpolation. Secure aggregation needs one thing those lack: reconstructing
hundreds of secrets from shares held by the *same* survivors, where the Lagrange coefficients can be
computed once and reused (``lagrange_at_zero``). The field is the smallest prime above 2^256, so any
32-byte secret is one field element and a share value is 33 bytes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from hamrah.core.errors import ProtocolError

PRIME = 2**256 + 297
"""The field modulus: the smallest prime above 2^256 (checked by the tests)."""

SHARE_BYTES = 33
"""Bytes of one share value on the wire (a field element < 2^257)."""


def split(secret: int, threshold: int, xs: Sequence[int], randbytes: Callable[[int], bytes]) -> dict[int, int]:
    """Split ``secret`` into shares at the points ``xs``; any ``threshold`` of them recover it.

    Args:
        secret: the field element to share, 0 <= secret < PRIME.
        threshold: t, the number of shares needed (the polynomial has degree t - 1).
        xs: distinct non-zero evaluation points, one per holder.
        randbytes: the source of the random coefficients (``os.urandom`` in production).

    Returns:
        ``{x: f(x)}`` for each x in ``xs``.

    Raises:
        ValueError: the secret is out of range, t < 1, or the points are not distinct and non-zero.
    """
    if not 0 <= secret < PRIME:
        raise ValueError(f"secret must lie in [0, PRIME), got a {secret.bit_length()}-bit value")
    if threshold < 1:
        raise ValueError(f"threshold must be at least 1, got {threshold}")
    if len(set(xs)) != len(xs) or any(x % PRIME == 0 for x in xs):
        raise ValueError("share points must be distinct and non-zero modulo PRIME")
    # 48 random bytes reduced mod p: the bias is below 2^-128.
    coeffs = [secret] + [int.from_bytes(randbytes(48), "big") % PRIME for _ in range(threshold - 1)]
    shares = {}
    for x in xs:
        acc = 0
        for c in reversed(coeffs):  # Horner
            acc = (acc * x + c) % PRIME
        shares[x] = acc
    return shares


def lagrange_at_zero(xs: Sequence[int]) -> list[int]:
    """Return the Lagrange coefficients that interpolate f(0) from values at ``xs``.

    Args:
        xs: distinct non-zero points.

    Returns:
        ``l_i`` with ``f(0) = sum_i l_i f(xs[i]) mod PRIME`` for any polynomial of degree < len(xs).
    """
    coeffs = []
    for i, xi in enumerate(xs):
        num, den = 1, 1
        for j, xj in enumerate(xs):
            if j != i:
                num = num * xj % PRIME
                den = den * (xj - xi) % PRIME
        coeffs.append(num * pow(den, -1, PRIME) % PRIME)
    return coeffs


def lagrange_at(xs: Sequence[int], x: int) -> list[int]:
    """Return the Lagrange coefficients that evaluate f(x) from values at ``xs`` (``lagrange_at_zero`` at 0).

    Used to check that a share beyond the first t lies on the polynomial the first t define.
    """
    coeffs = []
    for i, xi in enumerate(xs):
        num, den = 1, 1
        for j, xj in enumerate(xs):
            if j != i:
                num = num * (x - xj) % PRIME
                den = den * (xi - xj) % PRIME
        coeffs.append(num * pow(den, -1, PRIME) % PRIME)
    return coeffs


def locate_liar(xs: Sequence[int], extra: Sequence[int], residuals: Sequence[int]) -> int | None:
    """Return the point of the one wrong share, given t points ``xs`` and two or more further points
    ``extra`` whose residuals ``P'(x_k) - y_k`` (P' the interpolant of the shares at ``xs``) are not all 0.

    With one wrong share at x_j in ``xs`` (error d), P' = P + d L_j, so every residual is d L_j(x_k)
    and the ratio of two of them gives x_j in closed form; with the wrong share among ``extra``, only its
    residual is non-zero. None when no single wrong share explains the residuals (two or more liars).
    """
    bad = [x for x, r in zip(extra, residuals) if r]
    if len(bad) == 1 and len(extra) >= 2:
        return bad[0]
    if len(bad) != len(extra) or len(extra) < 2:
        return None
    (k1, r1), (k2, r2) = list(zip(extra, residuals))[:2]
    ell1 = ell2 = 1
    for xi in xs:
        ell1, ell2 = ell1 * (k1 - xi) % PRIME, ell2 * (k2 - xi) % PRIME
    # r1 / r2 = [ell(k1) / (k1 - x_j)] / [ell(k2) / (k2 - x_j)]  =>  R = (k2 - x_j) / (k1 - x_j)
    ratio = r1 * ell2 % PRIME * pow(r2 * ell1 % PRIME, -1, PRIME) % PRIME
    if ratio == 1:
        return None
    xj = (k2 - ratio * k1) * pow(1 - ratio, -1, PRIME) % PRIME
    if xj not in xs:
        return None
    d = r1 * pow(_basis(xs, xj, k1), -1, PRIME) % PRIME
    if any((d * _basis(xs, xj, k) - r) % PRIME for k, r in zip(extra, residuals)):
        return None  # not one error at x_j
    return xj


def _basis(xs: Sequence[int], xj: int, x: int) -> int:
    """L_j(x): the Lagrange basis polynomial of node ``xj`` over ``xs``, at ``x``."""
    num, den = 1, 1
    for xi in xs:
        if xi != xj:
            num, den = num * (x - xi) % PRIME, den * (xj - xi) % PRIME
    return num * pow(den, -1, PRIME) % PRIME


def reconstruct(shares: dict[int, int], threshold: int) -> int:
    """Recover the secret from at least ``threshold`` shares ``{x: f(x)}``.

    Args:
        shares: the shares at hand; the first ``threshold`` (by point) are used.
        threshold: t, the threshold the secret was split with.

    Returns:
        The secret f(0).

    Raises:
        ProtocolError: fewer than ``threshold`` shares were given.
    """
    if len(shares) < threshold:
        raise ProtocolError(f"Shamir reconstruction needs {threshold} shares, got {len(shares)}")
    xs = sorted(shares)[:threshold]
    return combine(lagrange_at_zero(xs), [shares[x] for x in xs])


def combine(coeffs: Sequence[int], values: Sequence[int]) -> int:
    """Return ``sum_i coeffs[i] * values[i] mod PRIME``: one secret from precomputed Lagrange coefficients."""
    return sum(c * v for c, v in zip(coeffs, values)) % PRIME
