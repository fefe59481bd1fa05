"""SecureBoost against central XGBoost and the label holder alone; time per tree, plaintext vs encrypted.

For one data set (held-out test rows; both parties' tables aligned on the same ids):

- **central**: XGBoost (``hist``, one thread) on the joined table, the same hyperparameters;
- **guest alone**: the same XGBoost on the label holder's features only;
- **plaintext**: SecureBoost with ``encrypted = False`` (the same protocol, gradients in the clear);
- **encrypted**: SecureBoost with Paillier (``--key-bits``), for ``--enc-trees`` trees (its trees
  are checked equal to the plaintext run's first trees, so its AUC is the plaintext AUC at that size).

Time per tree is process CPU time (``time.process_time``: every party's thread, so core-seconds of all
parties together, key generation included), divided by the number of trees. Bytes per tree count
every message of every party once (what the guest sent plus what it received). Writes
``benchmarks/results/secureboost_<data>.json``.

    python benchmarks/bench_secureboost.py --data a9a --trees 50 --depth 6 --lr 0.1 --bins 255 --enc-trees 1
    python benchmarks/bench_secureboost.py --data default_credit --trees 50 --depth 6 --lr 0.1 --bins 32 --enc-trees 1
    python benchmarks/bench_secureboost.py --data breast --trees 50 --depth 3 --lr 0.1 --bins 32 --enc-trees 5
    python benchmarks/bench_secureboost.py --data a9a --trees 5 --depth 6 --lr 0.1 --bins 255 --enc-trees 1 --rows 8000
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import xgboost as xgb
from sklearn.metrics import accuracy_score, roc_auc_score

from hamrah.data.vertical import load_vertical, read_party_csv
from hamrah.vertical.secureboost_core import SecureBoostConfig
from hamrah.vertical.secureboost_local import fit_local, predict_local

ROOT = Path(__file__).resolve().parents[1]
CLOCK = time.process_time


def load(name: str) -> tuple[dict, dict]:
    """Return aligned (train, test) tables: a9a's own split, else a seeded 80/20 split of the rows."""
    if name == "a9a":
        read = lambda split, party: read_party_csv(
            ROOT / f"data/a9a/a9a_{split}_{party}.csv.gz", label_column="y" if party == "guest" else None
        )
        return ({p: read("train", p) for p in ("guest", "host")}, {p: read("test", p) for p in ("guest", "host")})
    tables = load_vertical(name)
    perm = np.random.default_rng(0).permutation(len(tables["guest"].ids))
    cut = int(0.8 * len(perm))
    pick = lambda idx: {k: t.select(t.ids[np.sort(idx)]) for k, t in tables.items()}
    return pick(perm[:cut]), pick(perm[cut:])


def scores(y: np.ndarray, p: np.ndarray) -> dict:
    return {"auc": float(roc_auc_score(y, p)), "accuracy": float(accuracy_score(y, p >= 0.5))}


def xgboost(train: dict, test: dict, config: SecureBoostConfig, parties: tuple[str, ...]) -> dict:
    """Central XGBoost on the given parties' features, the same hyperparameters, one thread."""
    x = lambda t: np.hstack([t[p].features for p in parties])
    y = train["guest"].labels
    model = xgb.XGBClassifier(
        n_estimators=config.num_trees,
        max_depth=config.max_depth,
        learning_rate=config.learning_rate,
        reg_lambda=config.reg_lambda,
        min_child_weight=config.min_child_weight,
        tree_method="hist",
        max_bin=config.max_bins,
        base_score=float(y.mean()),
        n_jobs=1,
    )
    start = CLOCK()
    model.fit(x(train), y)
    seconds = CLOCK() - start
    return {
        **scores(test["guest"].labels, model.predict_proba(x(test))[:, 1]),
        "cpu_s_per_tree": seconds / config.num_trees,
    }


def secureboost(train: dict, test: dict, config: SecureBoostConfig) -> tuple[dict, object]:
    start = CLOCK()
    fit = fit_local(train, config)
    seconds = CLOCK() - start
    traffic = sum(fit.stats["guest"].sent_bytes.values()) + sum(fit.stats["guest"].received_bytes.values())
    return {
        **scores(test["guest"].labels, predict_local(fit, test)),
        "cpu_s_per_tree": seconds / config.num_trees,
        "party_cpu_s_per_tree": {n: s / config.num_trees for n, s in fit.cpu_s.items()},
        "bytes_per_tree": traffic / config.num_trees,
    }, fit


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="breast", choices=["a9a", "breast", "default_credit"])
    ap.add_argument("--trees", type=int, default=50)
    ap.add_argument("--depth", type=int, default=6)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--bins", type=int, default=32)
    ap.add_argument("--enc-trees", type=int, default=1)
    ap.add_argument("--key-bits", type=int, default=2048)
    ap.add_argument("--rows", type=int, default=0, help="keep only the first ROWS training rows (0: all)")
    args = ap.parse_args()
    train, test = load(args.data)
    if args.rows:
        train = {k: t.select(t.ids[: args.rows]) for k, t in train.items()}
    base = SecureBoostConfig(
        num_trees=args.trees,
        max_depth=args.depth,
        learning_rate=args.lr,
        max_bins=args.bins,
        encrypted=False,
        key_bits=args.key_bits,
        psi=False,  # the tables are aligned: time the trees, not PSI (docs/vertical.md times PSI)
    )
    out = {
        "data": args.data,
        "rows": {"train": len(train["guest"].ids), "test": len(test["guest"].ids)},
        "features": {p: train[p].features.shape[1] for p in ("guest", "host")},
        "config": {
            k: getattr(base, k)
            for k in (
                "num_trees",
                "max_depth",
                "learning_rate",
                "max_bins",
                "min_child_weight",
                "reg_lambda",
                "key_bits",
                "psi",
            )
        },
        "central_xgboost": xgboost(train, test, base, ("guest", "host")),
        "guest_alone_xgboost": xgboost(train, test, base, ("guest",)),
    }
    out["plaintext"], _ = secureboost(train, test, base)
    small = SecureBoostConfig(**{**out["config"], "num_trees": args.enc_trees, "encrypted": False})
    plain_small, plain_fit = secureboost(train, test, small)
    out["encrypted"], enc_fit = secureboost(
        train, test, SecureBoostConfig(**{**out["config"], "num_trees": args.enc_trees})
    )
    out["encrypted"]["trees"] = args.enc_trees
    out["encrypted"]["same_trees_as_plaintext"] = all(
        np.array_equal(getattr(a, k), getattr(b, k), equal_nan=k == "threshold")
        for a, b in zip(plain_fit.guest.trees, enc_fit.guest.trees)
        for k in ("owner", "feature", "threshold", "left", "right", "value")
    )
    out["he_overhead"] = out["encrypted"]["cpu_s_per_tree"] / plain_small["cpu_s_per_tree"]
    out["auc_gap_to_central"] = out["plaintext"]["auc"] - out["central_xgboost"]["auc"]
    out["machine"] = {"python": platform.python_version(), "processor": platform.processor() or platform.machine()}
    path = ROOT / f"benchmarks/results/secureboost_{args.data}{f'_{args.rows}rows' if args.rows else ''}.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
