"""What both vertical logistic-regression protocols share: settings, data preparation, the plaintext
and Paillier arithmetic behind one interface, resumable training state, and prediction.

Both protocols (``lr_coordinated``: an arbiter holds the key, Hardy et al. 2017, *Private federated
learning on vertically partitioned data via entity resolution and additively homomorphic encryption*;
``lr_sshe``: no third party) minimise the L2-regularised logistic loss with mini-batch gradient
descent on the second-order Taylor expansion of the loss at 0, as FATE does: the residual of a row is
``d = 0.25 (u_guest + u_host) + 0.5 - y`` for labels ``y`` in {0, 1}, where ``u_p = X_p w_p`` is a
party's partial score, and a party's gradient is ``X_p^T d / |B| + l2 w_p``.

Each party standardises its own columns with its own training mean and deviation (nothing leaves it)
and the guest adds the intercept. The batch order of an epoch comes from ``(seed, epoch)`` only, so a
run resumed from a checkpoint takes the same batches; encrypted and plaintext arithmetic decrypt to
the same fixed-point values, so an encrypted run is reproducible too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from hamrah.core.errors import ConfigError, DataError, ProtocolError
from hamrah.core.numbers import check_number
from hamrah.data.vertical import PartyTable
from hamrah.vertical import he
from hamrah.vertical.features import check_transform, quantile_fit, quantile_normal
from hamrah.vertical.lr_ops import SCHEMES, Enc, PaillierOps, PlainOps
from hamrah.vertical.psi import align


@dataclass(frozen=True)
class LRConfig:
    """Settings of vertical logistic regression (both protocols).

    Attributes:
        epochs: passes over the data at most. batch_size: rows per mini-batch (0: all rows).
        lr: the step size. l2: the L2 penalty. tol: stop when the norm of an epoch's weight change is
        below it. encrypted: False runs the same messages in plaintext (the HE-overhead baseline).
        key_bits: Paillier modulus (2048; 1024 only in tests). precision_bits: fixed-point bits of
        features and residuals. seed: batch order. psi: align rows with PSI first (else the tables
        must already hold the same ids in the same order). clip: clip each standardised feature to
        ``[-clip, clip]`` at its owner (0: no clipping; tames heavy tails the Taylor loss handles badly).
        transform: ``"standard"`` (mean and deviation) or ``"quantile"`` (each column through its
        rank-Gauss map first, :mod:`hamrah.vertical.features`: the Taylor loss's least-squares optimum
        is close to logistic regression on Gaussian-like columns). precompute: at the start of every
        epoch, compute the random factors of the epoch's encryptions ahead (the offline phase,
        ``lr_ops.ObfuscatorPool``; its CPU time is kept apart in ``LRState.offline_cpu_s``).
        scheme: ``"paillier"`` or ``"ou"`` (Okamoto-Uchiyama, :mod:`hamrah.vertical.he_ou`: arithmetic
        modulo ``n`` instead of ``n^2``: 2.3-2.6x cheaper per epoch in docs/vertical.md; its assumptions there).
        guest, hosts, arbiter: party names (``coordinated_lr`` takes any number of hosts, ``sshe_lr`` one).
    """

    epochs: int = 20
    batch_size: int = 0
    lr: float = 0.5
    l2: float = 0.0
    tol: float = 1e-4
    encrypted: bool = True
    key_bits: int = 2048
    precision_bits: int = 16
    seed: int = 0
    psi: bool = True
    clip: float = 0.0
    transform: str = "standard"
    precompute: bool = True
    scheme: str = "paillier"
    guest: str = "guest"
    hosts: tuple[str, ...] = ("host",)
    arbiter: str = "arbiter"

    def __post_init__(self) -> None:
        for name, low in (("epochs", 1), ("batch_size", 0), ("seed", 0)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ConfigError(f"lr.{name} = {v!r}: expected an integer >= {low}")
        for name in ("lr", "l2", "tol"):
            check_number(f"lr.{name}", getattr(self, name), 0.0)
        if not 8 <= self.precision_bits <= 24:
            raise ConfigError(f"lr.precision_bits = {self.precision_bits!r}: expected 8..24")
        he.check_key_bits(self.key_bits)
        check_transform(self.transform)
        if self.scheme not in SCHEMES:
            raise ConfigError(f"lr.scheme = {self.scheme!r}: expected one of {', '.join(SCHEMES)}")
        names = (self.guest, *self.hosts, self.arbiter)
        if (
            not isinstance(self.hosts, tuple)
            or not self.hosts
            or not all(isinstance(n, str) and n for n in names)
            or len(set(names)) != len(names)
        ):
            raise ConfigError(
                f"lr.hosts = {self.hosts!r}: expected one or more party names, distinct from each other, "
                f"the guest {self.guest!r} and the arbiter {self.arbiter!r}"
            )


@dataclass(frozen=True)
class LRState:
    """One party's part of a model after ``epoch`` completed epochs (what a checkpoint holds).

    ``quantiles`` is the rank-Gauss table of its columns (``transform = "quantile"``; empty otherwise);
    ``offline_cpu_s`` the CPU-seconds this party spent in the offline phase of this run (``precompute``).
    """

    epoch: int
    weights: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    converged: bool = False
    history: tuple = field(default=())
    quantiles: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    offline_cpu_s: float = 0.0

    @classmethod
    def from_arrays(cls, arrays) -> LRState:
        """Rebuild a state from the arrays it was saved as (a checkpoint).

        Raises:
            KeyError: an array is missing.
        """
        return cls(
            int(arrays["epoch"]),
            np.asarray(arrays["weights"]),
            np.asarray(arrays["mean"]),
            np.asarray(arrays["std"]),
            bool(arrays["converged"]),
            tuple(np.asarray(arrays["history"], dtype=np.float64).reshape(-1).tolist()),
            np.asarray(arrays["quantiles"]) if "quantiles" in arrays else np.zeros((0, 0)),
        )

    def progress(self) -> str:
        """Return a one-line report of this epoch."""
        change = f", own weight change {self.history[-1]:.3g}" if self.history else ""
        return f"epoch {self.epoch} done{change}" + (" (converged)" if self.converged else "")


OnEpoch = Callable[[LRState], None]
Step = Callable[[str, np.ndarray, np.ndarray], np.ndarray]


def prepare(
    channel, table: PartyTable, config: LRConfig, guest: bool, others: tuple[str, ...]
) -> tuple[PartyTable, np.ndarray]:
    """Align rows (PSI) and return the table and its standardised feature matrix (+ intercept for the guest).

    Raises:
        DataError: a non-finite feature, labels other than 0/1 at the guest, or no shared rows.
    """
    if config.psi:
        table = align(channel, table, config.guest, (channel.name,) + others, "lr")
    if len(table.ids) == 0:
        raise DataError("lr: the parties share no ids (do all of them read their ids with the same [data] id_type?)")
    if not np.all(np.isfinite(table.features)):
        raise DataError(
            "lr: the features hold a missing (NaN) or infinite value; vertical LR needs complete rows "
            "(secureboost takes missing values)"
        )
    if guest and (table.labels is None or not np.all(np.isin(table.labels, (0, 1)))):
        raise DataError("lr: the guest's labels must be 0 or 1")
    return table, table.features


def decide_stop(
    channel, config: LRConfig, decider: str, others: tuple[str, ...], epoch: int, dw2: float
) -> tuple[bool, bool]:
    """Pool the parties' squared weight changes at ``decider``; converged when the norm is below ``tol``.

    Each party reveals only ``||w_new - w_old||^2`` of its own part, once per epoch.

    Returns:
        ``(stop, converged)``: stop after this epoch (converged or the last epoch), and whether it converged.
    """
    tag = f"lr/dw/{epoch}"
    if channel.name != decider:
        channel.send(decider, tag, {"dw2": float(dw2)})
        reply = channel.recv(decider, f"lr/stop/{epoch}")
        return bool(reply.get("stop") is True), bool(reply.get("converged") is True)
    total = float(dw2)
    for peer in others:
        v = channel.recv(peer, tag).get("dw2")
        if not isinstance(v, float) or not np.isfinite(v) or v < 0:
            raise ProtocolError(f"{tag} from {peer!r}: expected a finite non-negative float 'dw2'")
        total += v
    converged = bool(np.sqrt(total) < config.tol)
    stop = converged or epoch + 1 >= config.epochs
    for peer in others:
        channel.send(peer, f"lr/stop/{epoch}", {"stop": stop, "converged": converged})
    return stop, converged


def train_loop(
    channel,
    config: LRConfig,
    z: np.ndarray,
    start: tuple[int, LRState | None],
    step: Step,
    stop_at: tuple[str, tuple[str, ...]],
    on_epoch: OnEpoch | None,
    stats: tuple,
    ops=None,
) -> LRState:
    """Run the epochs of one party: ``step(tag, rows, w)`` returns the data gradient of a batch.

    Args:
        start: the epoch to start from and the checkpoint of the epoch before (None: zeros).
        stop_at: the party that decides convergence, and the others it hears from.
        stats: this party's feature transform ``(mean, std, quantiles)``, saved in every state.
        ops: the arithmetic this party encrypts with, one vector of ``len(z)`` values per epoch
            (``precompute``: its random factors are made at the start of the epoch); None: none.
    """
    epoch, state = start
    w = np.zeros(z.shape[1]) if state is None else np.array(state.weights, dtype=np.float64)
    if w.shape != (z.shape[1],):
        raise DataError(f"lr: the checkpoint holds {w.size} weights, the data has {z.shape[1]} columns")
    history, offline = (() if state is None else state.history), 0.0
    while True:
        if ops is not None and config.precompute:
            offline += ops.reserve(len(z))
        w_old = w.copy()
        for b, rows in enumerate(batches(len(z), config, epoch)):
            w = w - config.lr * (step(f"{epoch}/{b}", rows, w) + config.l2 * w)
        stop, converged = decide_stop(channel, config, stop_at[0], stop_at[1], epoch, float(np.sum((w - w_old) ** 2)))
        history += (float(np.sqrt(np.sum((w - w_old) ** 2))),)
        state = LRState(epoch + 1, w, stats[0], stats[1], converged, history, stats[2], offline)
        if on_epoch is not None:
            on_epoch(state)
        if stop:
            return state
        epoch += 1


def standardise(
    x: np.ndarray, state: LRState | None, intercept: bool, clip: float = 0.0, transform: str = "standard"
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Return ``(z, mean, std, quantiles)``: ``x`` transformed with its own statistics (or a checkpoint's).

    Args:
        x: the party's features. state: a checkpoint whose statistics to reuse (None: fit on ``x``).
        intercept: append a column of ones (the guest). clip: clip to ``[-clip, clip]`` (0: no).
        transform: ``"quantile"`` maps each column through its rank-Gauss table before standardising.

    Raises:
        DataError: ``x`` does not fit the checkpoint's quantile table, or a column overflows float64.
    """
    quantiles = np.zeros((0, 0))
    if transform == "quantile":
        quantiles = quantile_fit(x) if state is None else state.quantiles
        x = quantile_normal(x, quantiles)
    with np.errstate(over="ignore", invalid="ignore"):
        mean = x.mean(axis=0) if state is None else state.mean
        std = x.std(axis=0) if state is None else state.std
    if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(std))):
        col = int(np.flatnonzero(~(np.isfinite(mean) & np.isfinite(std)))[0])
        raise DataError(f"lr: feature column {col} is too large to standardise (its mean or deviation overflows)")
    std = np.where(std > 0, std, 1.0)
    z = (x - mean) / std
    z = np.clip(z, -clip, clip) if clip else z
    return (np.hstack([z, np.ones((len(z), 1))]) if intercept else z), mean, std, quantiles


def batches(rows: int, config: LRConfig, epoch: int) -> list[np.ndarray]:
    """Return the row indices of each mini-batch of ``epoch`` (the same at every party)."""
    order = np.random.default_rng([config.seed, epoch]).permutation(rows)
    size = config.batch_size or rows
    return [order[i : i + size] for i in range(0, rows, size)]


def predict_guest(
    channel, z: np.ndarray, weights: np.ndarray, hosts: tuple[str, ...], tag: str = "predict"
) -> np.ndarray:
    """Return probabilities for the guest's rows ``z``: each host sends only its partial scores ``X_B w_B``."""
    u = z @ weights
    for host in hosts:
        u = u + PlainOps().from_wire(channel.recv(host, tag), len(z), f"{tag} from {host!r}")
    return 1.0 / (1.0 + np.exp(-u))


def predict_host(channel, z: np.ndarray, weights: np.ndarray, guest: str = "guest", tag: str = "predict") -> None:
    """Send the host's partial scores for its rows ``z`` to the guest (its weights stay with it)."""
    channel.send(guest, tag, {"v": z @ weights})


__all__ = [
    "Enc",
    "LRConfig",
    "LRState",
    "PaillierOps",
    "PlainOps",
    "batches",
    "decide_stop",
    "predict_guest",
    "predict_host",
    "prepare",
    "standardise",
    "train_loop",
]
