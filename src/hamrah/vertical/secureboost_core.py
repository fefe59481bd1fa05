"""SecureBoost's plaintext core: config, log-loss gradients in fixed point, histograms, split gain.

SecureBoost (Cheng et al. 2021, *SecureBoost: A Lossless Federated Learning Framework*, IEEE
Intelligent Systems) grows XGBoost's trees (Chen & Guestrin 2016, *XGBoost: A Scalable Tree
Boosting System*) over vertically split features. Everything here is local arithmetic shared by the
guest and the hosts; the protocol is in :mod:`hamrah.vertical.secureboost`.

Gradients and hessians are rounded to fixed point (``round(v * 2^precision_bits)``, int64) before
anything else, in both modes: histogram sums are then exact integers, so the plaintext mode and the
encrypted mode (where the sums are computed under Paillier) see bit-identical histograms and grow
the same trees.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hamrah.core.errors import ConfigError

#: XGBoost's smallest loss change that still splits a node (``kRtEps``).
MIN_GAIN = 1e-6


def _check(name: str, value, kind, low, high=None, low_open: bool = False) -> None:
    ok = isinstance(value, kind) and not isinstance(value, bool)
    if ok and kind is float:
        ok = np.isfinite(value)
    if ok:
        ok = (value > low if low_open else value >= low) and (high is None or value <= high)
    if not ok:
        bound = f"{'>' if low_open else '>='} {low}" + ("" if high is None else f" and <= {high}")
        raise ConfigError(
            f"secureboost.{name}: expected {'an integer' if kind is int else 'a number'} {bound}, got {value!r}"
        )


@dataclass(frozen=True)
class SecureBoostConfig:
    """Hyperparameters of SecureBoost, the XGBoost names in brackets.

    Attributes:
        num_trees: boosting rounds (``n_estimators``).
        max_depth: depth of each tree (``max_depth``); depth-wise growth.
        learning_rate: shrinkage of each leaf (``eta``).
        min_child_weight: least hessian sum in a child (``min_child_weight``).
        reg_lambda: L2 penalty on leaf weights (``lambda``).
        max_bins: quantile bins per feature (``max_bin``).
        encrypted: ``True``: hosts see only Paillier ciphertexts of gradients; ``False``: the
            plaintext mode (hosts see gradients; for testing and as the speed baseline).
        key_bits: Paillier modulus size (2048 for real use; 1024 only in tests).
        precision_bits: fixed-point bits of gradients and hessians.
    """

    num_trees: int = 10
    max_depth: int = 3
    learning_rate: float = 0.3
    min_child_weight: float = 1.0
    reg_lambda: float = 1.0
    max_bins: int = 32
    encrypted: bool = True
    key_bits: int = 2048
    precision_bits: int = 24

    def __post_init__(self) -> None:
        _check("num_trees", self.num_trees, int, 1, 10_000)
        _check("max_depth", self.max_depth, int, 1, 16)
        _check(
            "learning_rate",
            float(self.learning_rate)
            if isinstance(self.learning_rate, int) and not isinstance(self.learning_rate, bool)
            else self.learning_rate,
            float,
            0.0,
            1.0,
            low_open=True,
        )
        _check(
            "min_child_weight",
            float(self.min_child_weight)
            if isinstance(self.min_child_weight, int) and not isinstance(self.min_child_weight, bool)
            else self.min_child_weight,
            float,
            0.0,
        )
        _check(
            "reg_lambda",
            float(self.reg_lambda)
            if isinstance(self.reg_lambda, int) and not isinstance(self.reg_lambda, bool)
            else self.reg_lambda,
            float,
            0.0,
        )
        _check("max_bins", self.max_bins, int, 2, 256)
        if not isinstance(self.encrypted, bool):
            raise ConfigError(f"secureboost.encrypted: expected true or false, got {self.encrypted!r}")
        _check("key_bits", self.key_bits, int, 1024, 8192)
        if self.key_bits % 2:
            raise ConfigError(f"secureboost.key_bits: expected an even number, got {self.key_bits}")
        _check("precision_bits", self.precision_bits, int, 8, 32)


def sigmoid(f: np.ndarray) -> np.ndarray:
    """Return the logistic function of ``f``, stable for large ``|f|``."""
    return np.exp(-np.logaddexp(0.0, -f))


def logloss_gh(scores: np.ndarray, labels: np.ndarray, precision_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Return log-loss gradients and hessians of raw scores, in fixed point.

    Args:
        scores: raw margins ``f(x)``.
        labels: 0/1 labels.
        precision_bits: ``P``: values become ``round(v * 2^P)``.

    Returns:
        ``(g, h)``, int64: ``g = p - y`` in ``[-2^P, 2^P]``, ``h = p (1 - p)`` in ``[0, 2^(P-2)]``.
    """
    p = sigmoid(scores)
    scale = float(1 << precision_bits)
    g = np.rint((p - labels) * scale).astype(np.int64)
    h = np.rint(p * (1.0 - p) * scale).astype(np.int64)
    return g, h


def bin_offsets(num_bins: np.ndarray) -> np.ndarray:
    """Return where each feature's bins start in a flat histogram (length ``features + 1``)."""
    return np.concatenate([[0], np.cumsum(num_bins)]).astype(np.int64)


def histogram(
    bins: np.ndarray, offsets: np.ndarray, rows: np.ndarray, g: np.ndarray, h: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Return the flat int64 gradient and hessian histograms of ``rows`` (exact integer sums).

    Args:
        bins: ``rows x features`` bin indices.
        offsets: :func:`bin_offsets` of the features' bin counts.
        rows: the node's row indices.
        g, h: fixed-point gradients and hessians of all rows.
    """
    flat = (bins[rows].astype(np.int64) + offsets[:-1]).ravel()
    size = int(offsets[-1])
    nf = bins.shape[1]
    # float64 sums of integers are exact while below 2^53 (the config bounds precision_bits).
    gh = np.bincount(flat, weights=np.repeat(g[rows], nf).astype(np.float64), minlength=size)
    hh = np.bincount(flat, weights=np.repeat(h[rows], nf).astype(np.float64), minlength=size)
    return np.rint(gh).astype(np.int64), np.rint(hh).astype(np.int64)


@dataclass(frozen=True)
class Split:
    """The best split of a node among one party's features."""

    gain: float
    feature: int
    bin: int


def best_split(
    hist_g: np.ndarray, hist_h: np.ndarray, offsets: np.ndarray, total: tuple[int, int], config: SecureBoostConfig
) -> Split | None:
    """Return the split "bin <= b" of largest gain (first one on ties), or ``None`` if none helps.

    The gain is XGBoost's ``1/2 [G_L^2/(H_L+lambda) + G_R^2/(H_R+lambda) - G^2/(H+lambda)]``; both
    children need a hessian sum of at least ``min_child_weight``.

    Args:
        hist_g, hist_h: flat fixed-point histograms of the node.
        offsets: :func:`bin_offsets` of the features.
        total: the node's fixed-point ``(G, H)``.
        config: the hyperparameters.
    """
    scale = float(1 << config.precision_bits)
    cg, ch = np.cumsum(hist_g), np.cumsum(hist_h)
    start = offsets[:-1]
    base_g = np.repeat(np.concatenate([[0], cg])[start], np.diff(offsets))
    base_h = np.repeat(np.concatenate([[0], ch])[start], np.diff(offsets))
    gl, hl = (cg - base_g) / scale, (ch - base_h) / scale
    gt, ht = total[0] / scale, total[1] / scale
    gr, hr = gt - gl, ht - hl
    lam = config.reg_lambda
    with np.errstate(divide="ignore", invalid="ignore"):  # 0/0 only when lambda = 0 and a side is empty
        gain = 0.5 * (gl * gl / (hl + lam) + gr * gr / (hr + lam) - gt * gt / (ht + lam))
    valid = (hl >= config.min_child_weight) & (hr >= config.min_child_weight) & np.isfinite(gain)
    valid[offsets[1:] - 1] = False  # the last bin of a feature sends every row left
    gain = np.where(valid, gain, -np.inf)
    if gain.size == 0:
        return None
    best = int(np.argmax(gain))
    if not gain[best] > MIN_GAIN:
        return None
    feature = int(np.searchsorted(offsets, best, side="right") - 1)
    return Split(float(gain[best]), feature, best - int(offsets[feature]))


def leaf_weight(total: tuple[int, int], config: SecureBoostConfig) -> float:
    """Return the shrunk leaf value ``-eta * G / (H + lambda)`` of a node's fixed-point sums."""
    scale = float(1 << config.precision_bits)
    denominator = total[1] / scale + config.reg_lambda
    return 0.0 if denominator <= 0 else -config.learning_rate * (total[0] / scale) / denominator
