"""Small torch pieces shared by split learning and federated transfer learning.

Each party builds its networks from a seed keyed by its own name, so a party's initial weights do not
depend on who else takes part, and a central model of the same architecture can be built with exactly
the same weights (the equivalence tests of :mod:`hamrah.vertical.splitnn`). Weights are drawn from a
numpy ``Generator``, never from torch's global random state.
"""

from __future__ import annotations

import functools
import itertools
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch
from torch import nn

from hamrah.core.errors import DataError, ProtocolError
from hamrah.core.numbers import check_int, check_number
from hamrah.vertical.saved import need

F = TypeVar("F", bound=Callable)


def one_torch_thread(role: F) -> F:
    """Run a role function with one torch intra-op thread in the calling thread, restored afterwards.

    ``run_parties`` runs each party in its own Python thread; there torch would start an OpenMP team
    of its default size per party, whose spinning workers cost several times the CPU of the tiny
    per-batch operations (measured: 2.2 s against 0.10 s CPU for a default-credit SplitNN epoch on
    6,000 rows). The setting is per thread: the caller's own thread count is unchanged.
    """

    @functools.wraps(role)
    def wrapped(*args, **kwargs):
        before = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return role(*args, **kwargs)
        finally:
            torch.set_num_threads(before)

    return wrapped  # type: ignore[return-value]


def keyed_rng(seed: int, *keys: str | int) -> np.random.Generator:
    """Return an independent numpy generator for ``seed`` and a path of names or numbers.

    Args:
        seed: the run's root seed.
        keys: names (a party, a purpose) and numbers (an epoch), hashed to spawn keys.

    Returns:
        A generator that depends only on ``seed`` and ``keys``.
    """
    spawn = tuple(zlib.crc32(k.encode()) if isinstance(k, str) else int(k) for k in keys)
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=spawn))


def mlp(
    in_dim: int, hidden: Sequence[int], out_dim: int, rng: np.random.Generator, out_activation: bool = False
) -> nn.Sequential:
    """Return a ReLU multilayer perceptron initialised from ``rng``.

    Weights and biases are uniform in ``[-1/sqrt(fan_in), 1/sqrt(fan_in)]`` (PyTorch's default range
    for ``nn.Linear``), drawn from ``rng`` so that the same generator gives the same network.

    Args:
        in_dim: input width.
        hidden: widths of the hidden layers (may be empty: a linear map).
        out_dim: output width.
        rng: the generator to draw the weights from.
        out_activation: end with a ReLU too (a cut layer).

    Returns:
        The network, float32.
    """
    dims = [in_dim, *hidden, out_dim]
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(dims)):
        lin = nn.Linear(a, b)
        bound = 1.0 / np.sqrt(a)
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(rng.uniform(-bound, bound, (b, a)).astype(np.float32)))
            lin.bias.copy_(torch.from_numpy(rng.uniform(-bound, bound, b).astype(np.float32)))
        layers.append(lin)
        if i < len(dims) - 2 or out_activation:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


@dataclass(frozen=True)
class NetCheckpoint:
    """A party of a network protocol (SplitNN, FTL) after ``epoch`` training epochs: its networks' and
    Adam's tensors (and the guest's loss history, a SplitNN host's noise generator) as named arrays;
    ``on_epoch`` gets one per epoch (its progress line too), ``hamrah party`` saves it, and the parties
    resume from the last epoch all of them completed, to the uninterrupted model.

    Attributes:
        epoch: training epochs completed.
        arrays: the party's state (:func:`snapshot`).
        epochs: the run's epochs (the guest's progress line; 0 at a host).
        loss: the epoch's mean training loss (the guest; NaN at a host).
    """

    epoch: int
    arrays: Mapping[str, np.ndarray]
    epochs: int = 0
    loss: float = float("nan")

    def progress(self) -> str:
        """Return a one-line report of this epoch."""
        if not self.epochs:
            return f"epoch {self.epoch} done"
        return f"epoch {self.epoch}/{self.epochs} done, training loss {self.loss:.4f}"

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> NetCheckpoint:
        """Rebuild a checkpoint from its saved arrays."""
        what = "network protocol checkpoint"
        inner = {k[len("arrays.") :]: np.asarray(v) for k, v in arrays.items() if k.startswith("arrays.")}
        return cls(
            int(need(arrays, "epoch", what)),
            inner,
            int(need(arrays, "epochs", what)),
            float(need(arrays, "loss", what)),
        )


def snapshot(modules: Mapping[str, nn.Module], opt: torch.optim.Optimizer, **extra: np.ndarray) -> dict:
    """Return ``modules``' tensors (``name.key``), ``opt``'s per-parameter state (``adam.i.key``) and ``extra``."""
    out = {f"{n}.{k}": v.detach().numpy().copy() for n, m in modules.items() for k, v in m.state_dict().items()}
    for i, state in opt.state_dict()["state"].items():
        out |= {f"adam.{i}.{k}": torch.as_tensor(v).detach().numpy().copy() for k, v in state.items()}
    return out | extra


def restore(arrays: Mapping[str, np.ndarray], modules: Mapping[str, nn.Module], opt: torch.optim.Optimizer) -> None:
    """Load a :func:`snapshot` into ``modules`` and ``opt`` (built from the same config).

    Raises:
        DataError: the arrays do not fit the networks (another config or party).
    """
    try:
        for n, m in modules.items():
            m.load_state_dict(
                {k[len(n) + 1 :]: torch.from_numpy(np.array(v)) for k, v in arrays.items() if k.startswith(f"{n}.")}
            )
        state: dict[int, dict] = {}
        for k, v in arrays.items():
            if k.startswith("adam."):
                _, i, key = k.split(".", 2)
                state.setdefault(int(i), {})[key] = torch.from_numpy(np.array(v))
        opt.load_state_dict({"state": state, "param_groups": opt.state_dict()["param_groups"]})
    except (RuntimeError, ValueError, KeyError) as e:
        raise DataError(f"the checkpoint does not fit this party's networks ({str(e).splitlines()[0]})") from None


@dataclass(frozen=True)
class Standardizer:
    """Per-column mean and scale fitted on one party's training rows (kept by that party only)."""

    mean: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(cls, x: np.ndarray) -> Standardizer:
        """Fit on ``x`` (rows x features); constant columns get scale 1.

        Raises:
            DataError: ``x`` is empty or holds a non-finite value.
        """
        if x.ndim != 2 or len(x) == 0 or not np.all(np.isfinite(x)):
            raise DataError(f"features: expected a non-empty finite matrix, got shape {x.shape}")
        scale = x.std(axis=0)
        return cls(x.mean(axis=0), np.where(scale > 0, scale, 1.0))

    def __call__(self, x: np.ndarray) -> torch.Tensor:
        """Return ``x`` standardised as a float32 tensor.

        Raises:
            DataError: ``x`` has a different number of columns or a non-finite value.
        """
        if x.ndim != 2 or x.shape[1] != len(self.mean) or not np.all(np.isfinite(x)):
            raise DataError(f"features: expected a finite matrix with {len(self.mean)} columns, got shape {x.shape}")
        return torch.from_numpy(((x - self.mean) / self.scale).astype(np.float32))


class RowIndex:
    """Find the rows of given ids in a party's table (a party answers only for ids it holds)."""

    def __init__(self, ids: np.ndarray):
        self._order = np.argsort(ids, kind="stable")
        self._sorted = ids[self._order]

    def rows(self, ids: np.ndarray, who: str) -> np.ndarray:
        """Return the row positions of ``ids``.

        Raises:
            ProtocolError: ``ids`` is not a 1-D int64 array or holds an id this party does not have.
        """
        if not isinstance(ids, np.ndarray) or ids.dtype != np.int64 or ids.ndim != 1:
            raise ProtocolError(f"{who}: expected a 1-D int64 array of ids")
        pos = np.clip(np.searchsorted(self._sorted, ids), 0, max(len(self._sorted) - 1, 0))
        if len(self._sorted) == 0 or np.any(self._sorted[pos] != ids):
            missing = int(np.sum(self._sorted[pos] != ids)) if len(self._sorted) else len(ids)
            raise ProtocolError(
                f"{who}: {missing} of {len(ids)} ids are not in this party's table "
                "(expected ids from the private set intersection)"
            )
        return self._order[pos]


def check_array(value: object, name: str, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    """Return ``value`` if it is a finite array of ``shape`` and ``dtype``, else refuse it.

    Raises:
        ProtocolError: naming the field, what came and what was expected.
    """
    if not isinstance(value, np.ndarray) or value.dtype.name != dtype or value.shape != shape:
        got = f"{value.dtype.name} {value.shape}" if isinstance(value, np.ndarray) else type(value).__name__
        raise ProtocolError(f"{name}: expected a {dtype} array of shape {shape}, got {got}")
    if not np.all(np.isfinite(value)):
        raise ProtocolError(f"{name}: expected finite values")
    return value


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Return the area under the ROC curve (Mann-Whitney U, ties counted half).

    Raises:
        DataError: the labels are not all 0/1, lengths differ or one class is absent.
    """
    y, s = np.asarray(labels, dtype=np.float64), np.asarray(scores, dtype=np.float64)
    if y.shape != s.shape or y.ndim != 1 or not np.all((y == 0) | (y == 1)):
        raise DataError("roc_auc: expected equal-length 1-D arrays with 0/1 labels")
    pos, neg = int(y.sum()), int(len(y) - y.sum())
    if pos == 0 or neg == 0:
        raise DataError("roc_auc: both classes must be present")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s))
    sorted_s = s[order]
    # average ranks over ties
    _, start, counts = np.unique(sorted_s, return_index=True, return_counts=True)
    avg = start + (counts + 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[y == 1].sum() - pos * (pos + 1) / 2.0) / (pos * neg))


def check_positive(name: str, value: object, kind: type = int, allow_zero: bool = False) -> None:
    """Refuse a config value that is not a positive ``kind`` (``allow_zero``: non-negative).

    Raises:
        ConfigError: naming the key and what was expected.
    """
    if kind is int:
        check_int(name, value, 0 if allow_zero else 1)
    else:
        check_number(name, value, 0.0, open_low=not allow_zero)


__all__ = [
    "NetCheckpoint",
    "RowIndex",
    "Standardizer",
    "check_array",
    "check_positive",
    "keyed_rng",
    "mlp",
    "one_torch_thread",
    "restore",
    "roc_auc",
    "snapshot",
]
