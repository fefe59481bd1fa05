"""A bank and an online shop predict credit-card default together, each keeping its own columns.

    python examples/bank_shop/compare.py               # writes examples/bank_shop/results/comparison.{json,md}
    python examples/bank_shop/compare.py --plaintext   # unencrypted (quick): results/comparison_plaintext.*

Vertical FL through hamrah's public API (`hamrah.vertical.train` and `Trained.predict`): each protocol
aligns the two customer lists by PSI, trains, then scores the test customers; beside each, the model
one company holding both tables would train (central) and the bank's model on its own columns alone.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import xgboost as xgb
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import QuantileTransformer

from hamrah.data import load_vertical
from hamrah.vertical import train

HERE = Path(__file__).resolve().parent
TREES = {"num_trees": 20, "max_depth": 3, "learning_rate": 0.3, "max_bins": 32}
LR = {"epochs": 20, "batch_size": 1024, "lr": 0.3, "transform": "quantile", "scheme": "ou"}
NET = {"epochs": 10, "batch_size": 256, "bottom_hidden": (16,), "cut_dim": 8, "top_hidden": (8,)}


def customers(seed: int = 0) -> dict:
    """The bank (labels + 13 columns) holds 90% of the 30,000 customers, the shop (10 columns) 80%,
    each its own random draw; a fifth of the customers both hold (by id) is the test set."""
    t = load_vertical("default_credit")
    rng = np.random.default_rng(seed)
    n = len(t["guest"].ids)
    bank = t["guest"].select(rng.choice(t["guest"].ids, int(0.9 * n), replace=False))
    shop = t["host"].select(rng.choice(t["host"].ids, int(0.8 * n), replace=False))
    shared = np.intersect1d(bank.ids, shop.ids)
    test = shared[shared % 5 == 0]
    keep = {name: table.select(np.setdiff1d(table.ids, test)) for name, table in (("bank", bank), ("shop", shop))}
    return {
        "train": keep,
        "test": {"bank": bank.select(test), "shop": shop.select(test)},
        "all": {"bank": bank, "shop": shop},
        "shared": len(shared),
    }


def scores(y: np.ndarray, p: np.ndarray) -> dict:
    return {"auc": float(roc_auc_score(y, p)), "accuracy": float(np.mean((p >= 0.5) == (y == 1)))}


def joined(tables: dict, columns=("bank", "shop")) -> tuple[np.ndarray, np.ndarray]:
    """The customers every table in ``tables`` holds, their ``columns`` side by side, and their labels."""
    ids = tables["bank"].ids if columns == ("bank",) else np.intersect1d(tables["bank"].ids, tables["shop"].ids)
    x = np.hstack([tables[c].select(ids).features for c in columns])
    return x, tables["bank"].select(ids).labels


def central(data: dict, columns) -> dict:
    """XGBoost and logistic regression on one company's table (``columns``), scored on the test set."""
    x, y = joined(data["train"], columns)
    xt, yt = joined(data["test"], columns)
    boost = xgb.XGBClassifier(
        n_estimators=TREES["num_trees"], max_depth=3, learning_rate=0.3, max_bin=32, tree_method="hist", n_jobs=1
    ).fit(x, y)
    rank = QuantileTransformer(output_distribution="normal", random_state=0).fit(x)
    lr = LogisticRegression(C=len(y), max_iter=2000).fit(rank.transform(x), y)  # l2 = 1/n, as the parties'
    return {
        "xgboost": scores(yt, boost.predict_proba(xt)[:, 1]),
        "logistic regression": scores(yt, lr.predict_proba(rank.transform(xt))[:, 1]),
    }


def vertical(data: dict, protocol: str, settings: dict) -> dict:
    """Train ``protocol`` between the bank (guest) and the shop (host), then score the test customers."""
    parties = {"guest": data["train"]["bank"], "host": data["train"]["shop"]}
    start = time.perf_counter()
    model = train(protocol, parties, settings, progress=lambda line: line.startswith("guest") and print(line))
    seconds = time.perf_counter() - start
    ids, p = model.predict({"guest": data["test"]["bank"], "host": data["test"]["shop"]})
    out = scores(data["test"]["bank"].select(ids).labels, p)
    return out | {"seconds": round(seconds, 1), "mb_exchanged": round(model.stats["guest"].total_bytes / 1e6, 1)}


def main() -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--plaintext", action="store_true", help="run the protocols unencrypted (quick)")
    args = ap.parse_args()
    data = customers()
    enc = {"encrypted": not args.plaintext}
    rows = []
    for name, res in central(data, ("bank", "shop")).items():
        rows.append({"setting": f"central {name}, both tables joined", **res})
    for name, res in central(data, ("bank",)).items():
        rows.append({"setting": f"the bank alone, {name}", **res})
    mode = ("plaintext mode", "plaintext mode") if args.plaintext else ("Paillier", "OU")
    runs = {
        f"SecureBoost ({mode[0]})": ("secureboost", TREES | enc),
        f"SSHE-LR, no third party ({mode[1]})": ("sshe_lr", LR | enc),
        "SplitNN (float32 activations)": ("splitnn", NET),
    }
    for label, (protocol, settings) in runs.items():
        print(f"training {label} ...", flush=True)
        rows.append({"setting": f"vertical: {label}", **vertical(data, protocol, settings)})
    report = {
        "command": "python examples/bank_shop/compare.py" + (" --plaintext" if args.plaintext else ""),
        "customers": {name: len(table.ids) for name, table in data["all"].items()} | {"both": data["shared"]},
        "train": {k: len(v.ids) for k, v in data["train"].items()},
        "test": len(data["test"]["bank"].ids),
        "rows": rows,
    }
    results = HERE / "results"
    results.mkdir(exist_ok=True)
    name = "comparison_plaintext" if args.plaintext else "comparison"
    (results / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    cols = ["auc", "accuracy", "seconds", "mb_exchanged"]
    lines = ["| setting | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for r in rows:
        cells = [f"{r[c]:.4f}" if c in ("auc", "accuracy") else str(r.get(c, "")) for c in cols]
        lines.append(f"| {r['setting']} | " + " | ".join(cells) + " |")
    (results / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return report


if __name__ == "__main__":
    main()
