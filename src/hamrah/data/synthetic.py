"""FedProx's synthetic(alpha, beta) federated data (Li et al. 2020, *Federated Optimization in
Heterogeneous Networks*, section 5.1; after Shamir et al. 2014).

Device k: u_k ~ N(0, alpha), W_k, b_k ~ N(u_k, 1) entrywise (10 x 60, 10); B_k ~ N(0, beta),
v_k[j] ~ N(B_k, 1); x ~ N(v_k, Sigma) with Sigma = diag(j^-1.2); y = argmax softmax(W_k x + b_k).
alpha controls how much local models differ, beta how much local inputs differ. Sizes follow the
authors' generator: lognormal(4, 2) + 50 per device (a power law); 80% of each device's examples
train, 20% test (pooled). ``iid = True`` draws one shared W, b and v (their synthetic_iid).
"""

from __future__ import annotations

import numpy as np
import torch

from hamrah.core.errors import ConfigError
from hamrah.core.seeds import Stream, stream_rng
from hamrah.data.federated import ArrayData, Dataset

DIM, CLASSES = 60, 10


def _device(rng: np.random.Generator, n: int, alpha: float, beta: float, shared: tuple | None) -> tuple:
    if shared is None:
        u, big_b = rng.normal(0, np.sqrt(alpha)), rng.normal(0, np.sqrt(beta))
        w, b = rng.normal(u, 1, (CLASSES, DIM)), rng.normal(u, 1, CLASSES)
        v = rng.normal(big_b, 1, DIM)
    else:
        w, b, v = shared
    sd = np.arange(1, DIM + 1, dtype=np.float64) ** (-1.2 / 2)
    x = v + rng.standard_normal((n, DIM)) * sd
    y = np.argmax(x @ w.T + b, axis=1)
    return x, y


def synthetic(alpha: float, beta: float, num_clients: int = 30, seed: int = 0, iid: bool = False) -> Dataset:
    """Return synthetic(alpha, beta) with ``num_clients`` natural clients (``train_groups``).

    Raises:
        ConfigError: negative alpha or beta, or fewer than one client.

    Example:
        >>> ds = synthetic(1.0, 1.0)
        >>> ds.train.x.shape[1], ds.num_classes, len(set(ds.train_groups.tolist()))
        (60, 10, 30)
    """
    if not (alpha >= 0 and beta >= 0):
        raise ConfigError(f"synthetic({alpha}, {beta}): expected alpha >= 0 and beta >= 0")
    if num_clients < 1:
        raise ConfigError(f"synthetic: num_clients = {num_clients}: expected >= 1")
    rng = stream_rng(seed, Stream.SYNTHETIC)
    sizes = rng.lognormal(4, 2, num_clients).astype(int) + 50
    shared = None
    if iid:
        shared = (rng.normal(0, 1, (CLASSES, DIM)), rng.normal(0, 1, CLASSES), np.zeros(DIM))
    parts = {"xtr": [], "ytr": [], "gtr": [], "xte": [], "yte": []}
    for k, n in enumerate(sizes):
        x, y = _device(rng, int(n), alpha, beta, shared)
        cut = int(0.8 * n)
        parts["xtr"].append(x[:cut]), parts["ytr"].append(y[:cut]), parts["gtr"].append(np.full(cut, k))
        parts["xte"].append(x[cut:]), parts["yte"].append(y[cut:])
    cat = {k: np.concatenate(v) for k, v in parts.items()}
    name = "synthetic_iid" if iid else f"synthetic_{alpha:g}_{beta:g}"
    return Dataset(
        name,
        ArrayData(torch.tensor(cat["xtr"], dtype=torch.float32), torch.tensor(cat["ytr"], dtype=torch.long)),
        ArrayData(torch.tensor(cat["xte"], dtype=torch.float32), torch.tensor(cat["yte"], dtype=torch.long)),
        CLASSES,
        train_groups=cat["gtr"],
        group_names=tuple(f"device_{k}" for k in range(num_clients)),
        info={
            "generator": "Li et al. 2020 synthetic(alpha, beta)",
            "alpha": alpha,
            "beta": beta,
            "sizes": sizes.tolist(),
        },
    )


def parse_name(name: str) -> tuple[float, float, bool] | None:
    """Return (alpha, beta, iid) for ``synthetic_<alpha>_<beta>`` or ``synthetic_iid``, else None."""
    if name == "synthetic_iid":
        return 0.0, 0.0, True
    parts = name.split("_")
    if len(parts) != 3 or parts[0] != "synthetic":
        return None
    try:
        return float(parts[1]), float(parts[2]), False
    except ValueError:
        return None
