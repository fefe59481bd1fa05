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
from hamrah.core.seeds import Stream, stream_rng

#: XGBoost's smallest loss change that still splits a node (``kRtEps``).
MIN_GAIN = 1e-6
OBJECTIVES = ("binary:logistic", "reg:squarederror", "multi:softprob")


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
        objective: ``binary:logistic`` (0/1 labels, probabilities), ``reg:squarederror`` (any finite
            labels, predictions in their unit) or ``multi:softprob`` (labels ``0..K-1``, one tree per
            class per boosting round, class probabilities), XGBoost's names.
        subsample: the share of rows each tree learns from (``subsample``): the others' gradients are
            sent as encryptions of zero, so no host learns which rows were drawn.
        colsample_bytree: the share of each party's features each tree may split on (``colsample_bytree``).
        seed: the draws of rows and features (per tree, so a resumed run draws the same).
        psi: align the parties' rows by PSI first (the guest announces it, hosts follow); ``False``:
            the tables already hold the same ids in the same order.
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
    objective: str = "binary:logistic"
    subsample: float = 1.0
    colsample_bytree: float = 1.0
    seed: int = 0
    psi: bool = True

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
        _check("max_bins", self.max_bins, int, 2, 255)
        for name in ("encrypted", "psi"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"secureboost.{name}: expected true or false, got {getattr(self, name)!r}")
        _check("key_bits", self.key_bits, int, 1024, 8192)
        if self.key_bits % 2:
            raise ConfigError(f"secureboost.key_bits: expected an even number, got {self.key_bits}")
        _check("precision_bits", self.precision_bits, int, 8, 32)
        for name in ("subsample", "colsample_bytree"):
            v = getattr(self, name)
            _check(
                name, float(v) if isinstance(v, int) and not isinstance(v, bool) else v, float, 0.0, 1.0, low_open=True
            )
        _check("seed", self.seed, int, 0)
        if self.objective not in OBJECTIVES:
            raise ConfigError(f"secureboost.objective: expected one of {', '.join(OBJECTIVES)}, got {self.objective!r}")


def sigmoid(f: np.ndarray) -> np.ndarray:
    """Return the logistic function of ``f``, stable for large ``|f|``."""
    return np.exp(-np.logaddexp(0.0, -f))


def softmax(margins: np.ndarray) -> np.ndarray:
    """Return the row-wise softmax of ``rows x K`` margins."""
    z = np.exp(margins - margins.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


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


def base_score(labels: np.ndarray, objective: str) -> float:
    """Return the first margin: the log-odds of the labels' mean (log-loss), their mean (squared error),
    or 0 for every class (softmax)."""
    if objective == "multi:softprob":
        return 0.0
    if objective == "reg:squarederror":
        return float(labels.mean())
    mean = float(np.clip(labels.mean(), 1e-6, 1 - 1e-6))
    return float(np.log(mean / (1 - mean)))


def gradients(
    scores: np.ndarray, labels: np.ndarray, config: SecureBoostConfig
) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
    """Return the objective's fixed-point gradients and hessians and their scales ``(s_g, s_h)``.

    A sum of fixed-point values divided by its scale is the float sum. Every value stays within the
    bounds the packing relies on (``|g| <= 2^P``, ``0 <= h <= 2^(P-2)``): log-loss has both scales
    ``2^P``; squared error (``g = f - y``, ``h = 1``) scales ``g`` by ``2^(P - e)`` with ``2^e`` the
    power of two at or above this tree's largest ``|g|``, and ``h`` by ``2^(P-2)``; softmax (``scores``
    and the results ``rows x K``: ``g = p - [y = k]``, ``h = max(2 p (1 - p), 1e-16)`` as XGBoost) scales
    ``g`` by ``2^P`` and ``h`` (at most 1/2) by ``2^(P-1)``.
    """
    p = config.precision_bits
    if config.objective == "binary:logistic":
        return (*logloss_gh(scores, labels, p), (float(1 << p), float(1 << p)))
    if config.objective == "multi:softprob":
        prob = softmax(scores)
        onehot = np.eye(scores.shape[1])[labels.astype(np.int64)]
        s_g, s_h = float(1 << p), float(1 << (p - 1))
        h = np.maximum(2.0 * prob * (1.0 - prob), 1e-16)
        return np.rint((prob - onehot) * s_g).astype(np.int64), np.rint(h * s_h).astype(np.int64), (s_g, s_h)
    residual = scores - labels
    e = max(0, int(np.ceil(np.log2(max(float(np.abs(residual).max(initial=0.0)), 1.0)))))
    s_g, s_h = 2.0 ** (p - e), float(1 << (p - 2))
    return np.rint(residual * s_g).astype(np.int64), np.full(len(residual), 1 << (p - 2), dtype=np.int64), (s_g, s_h)


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
    """The best split of a node among one party's features: "bin <= ``bin``" goes left, and the
    missing values (the feature's last bin) go left when ``missing_left``."""

    gain: float
    feature: int
    bin: int
    missing_left: bool = False


def best_split(
    hist_g: np.ndarray,
    hist_h: np.ndarray,
    offsets: np.ndarray,
    total: tuple[int, int],
    config: SecureBoostConfig,
    scales: tuple[float, float] | None = None,
    allowed: np.ndarray | None = None,
) -> Split | None:
    """Return the split of largest gain, or ``None`` if none helps.

    The gain is XGBoost's ``1/2 [G_L^2/(H_L+lambda) + G_R^2/(H_R+lambda) - G^2/(H+lambda)]``; both
    children need a hessian sum of at least ``min_child_weight``. Candidates are taken in XGBoost's
    order, the first of equal gains winning: per feature, "bin <= b" with the missing values right
    for ascending ``b``, then with them left for descending ``b`` (the split sending every present
    value and the missing ones left is no split).

    Args:
        hist_g, hist_h: flat fixed-point histograms of the node, each feature's missing bin last.
        offsets: :func:`bin_offsets` of the features.
        total: the node's fixed-point ``(G, H)``.
        config: the hyperparameters.
        scales: the fixed-point scales of ``g`` and ``h`` (:func:`gradients`; default ``2^P`` both).
        allowed: the features this tree may split on (a boolean mask; default all).
    """
    s_g, s_h = scales or (float(1 << config.precision_bits),) * 2
    lam = config.reg_lambda
    gt, ht = total[0] / s_g, total[1] / s_h
    nb = np.diff(offsets)
    if nb.size == 0:
        return None
    feat = np.repeat(np.arange(len(nb)), nb)  # each flat bin's feature, its index in it, the feature's missing bin
    pos = np.arange(int(offsets[-1])) - offsets[:-1][feat]
    last = nb[feat] - 1
    cg, ch = np.cumsum(hist_g), np.cumsum(hist_h)
    base_g = np.concatenate([[0], cg])[offsets[:-1]][feat]
    base_h = np.concatenate([[0], ch])[offsets[:-1]][feat]
    gl, hl = (cg - base_g) / s_g, (ch - base_h) / s_h  # present bins 0..b of the feature, left
    miss = offsets[1:] - 1
    mg, mh = (hist_g[miss] / s_g)[feat], (hist_h[miss] / s_h)[feat]
    has_missing = ((hist_g[miss] != 0) | (hist_h[miss] != 0))[feat]
    fwd = pos < last  # missing values right: every present bin
    bwd = (pos < last - 1) & has_missing  # missing values left: not the split that sends everything left
    left_g = np.concatenate([gl[fwd], gl[bwd] + mg[bwd]])
    left_h = np.concatenate([hl[fwd], hl[bwd] + mh[bwd]])
    # XGBoost's order: per feature, missing right for ascending b, then missing left for descending b
    features = np.concatenate([feat[fwd], feat[bwd]])
    direction = np.concatenate([np.zeros(int(fwd.sum()), np.int64), np.ones(int(bwd.sum()), np.int64)])
    within = np.concatenate([pos[fwd], -pos[bwd]])
    order = np.lexsort((within, direction, features))
    left_g, left_h, right_g, right_h = left_g[order], left_h[order], gt - left_g[order], ht - left_h[order]
    parent = gt * gt / (ht + lam) if ht + lam > 0 else 0.0
    with np.errstate(divide="ignore", invalid="ignore"):  # 0/0 only when lambda = 0 and a side is empty
        gain = 0.5 * (left_g**2 / (left_h + lam) + right_g**2 / (right_h + lam) - parent)
    valid = (left_h >= config.min_child_weight) & (right_h >= config.min_child_weight) & np.isfinite(gain)
    if allowed is not None:
        valid &= allowed[features[order]]
    gain = np.where(valid, gain, -np.inf)
    i = int(np.argmax(gain))
    if not gain[i] > MIN_GAIN:
        return None
    f, b = int(features[order][i]), int(abs(within[order][i]))
    return Split(float(gain[i]), f, b, bool(direction[order][i]))


def tree_draws(config: SecureBoostConfig, tree: int, rows: int, features: list[int]) -> tuple[np.ndarray, list]:
    """Return tree ``tree``'s drawn rows (a boolean mask) and, per party, its drawn features (a boolean
    mask over ``features[p]`` columns): ``round(share * n)`` of each, at least one; all when the share is 1."""
    rng = stream_rng(config.seed, Stream.BOOST_DRAW, tree)

    def draw(n: int, share: float) -> np.ndarray:
        mask = np.zeros(n, dtype=bool)
        mask[rng.permutation(n)[: max(1, round(share * n))] if share < 1 else slice(None)] = True
        return mask

    return draw(rows, config.subsample), [draw(n, config.colsample_bytree) for n in features]


def goes_left(bins: np.ndarray, split_bin: int, offsets: np.ndarray, feature: int, missing_left: bool) -> np.ndarray:
    """Return which of ``bins`` (one feature's bin indices) the split "bin <= split_bin" sends left."""
    missing = int(offsets[feature + 1] - offsets[feature]) - 1  # the feature's last bin
    return (bins <= split_bin) | ((bins == missing) & missing_left)


def leaf_weight(total: tuple[int, int], config: SecureBoostConfig, scales: tuple[float, float] | None = None) -> float:
    """Return the shrunk leaf value ``-eta * G / (H + lambda)`` of a node's fixed-point sums."""
    s_g, s_h = scales or (float(1 << config.precision_bits),) * 2
    denominator = total[1] / s_h + config.reg_lambda
    return 0.0 if denominator <= 0 else -config.learning_rate * (total[0] / s_g) / denominator
