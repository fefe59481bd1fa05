"""Split learning against a central model of the same architecture, on the bundled vertical splits.

For each data set: a seeded 80/20 split of the shared ids; SplitNN between the guest (labels, 10 or 13
features, top network) and the host (20 or 10 features) in float32, float16 and float32 with Gaussian
noise on the activations; the same architecture trained centrally on the joined table; the label holder
alone (the same networks without the host's block); scikit-learn logistic regression on the joined
table and on the guest's features. Reported: test AUC and accuracy (threshold 0.5), CPU seconds per
epoch (all parties, one torch thread, process time since the machine is shared) and bytes exchanged
per training epoch (both directions, from the channel's counters). Results in
``benchmarks/results/splitnn.json``.

    python benchmarks/bench_splitnn.py                          # breast and default credit
    python benchmarks/bench_splitnn.py --data breast --epochs 5  # a quick look
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch: each party's thread would spin its own OpenMP team

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

from hamrah.data.vertical import load_vertical
from hamrah.vertical import run_parties
from hamrah.vertical import splitnn as sn
from hamrah.vertical.nets import roc_auc

SETTINGS = {  # data set -> (epochs, batch size)
    "breast": (30, 32),
    "default_credit": (10, 256),
}


def metrics(y: np.ndarray, p: np.ndarray) -> dict:
    return {"auc": round(roc_auc(y, p), 4), "accuracy": round(float(np.mean((p >= 0.5) == (y == 1))), 4)}


def split_run(g, h, cfg, tr, te) -> dict:
    t0 = time.process_time()
    res, stats = run_parties(
        {"guest": lambda c: sn.guest(c, g, cfg, train_ids=tr), "host": lambda c: sn.host(c, h, cfg)}
    )
    cpu = time.process_time() - t0
    scores, _ = run_parties(
        {
            "guest": lambda c: sn.predict(c, res["guest"].model, g, cfg, te),
            "host": lambda c: sn.serve(c, res["host"], h, cfg),
        }
    )
    return {
        **metrics(g.select(te).labels, scores["guest"]),
        "cpu_s_per_epoch": round(cpu / cfg.epochs, 3),
        "bytes_per_epoch": stats["guest"].total_bytes // cfg.epochs,
    }


def central_run(tables, cfg, tr, te) -> dict:
    t0 = time.process_time()
    res = sn.train_central(tables, cfg, train_ids=tr, eval_ids=te)
    cpu = time.process_time() - t0
    return {**metrics(tables["guest"].select(te).labels, res.scores), "cpu_s_per_epoch": round(cpu / cfg.epochs, 3)}


def sklearn_lr(x_tr, y_tr, x_te, y_te) -> dict:
    lr = LogisticRegression(max_iter=5000).fit(x_tr, y_tr)
    return metrics(y_te, lr.predict_proba(x_te)[:, 1])


def bench(name: str, epochs: int | None, noise: float) -> dict:
    t = load_vertical(name)
    g = t["guest"]
    h = t["host"].select(g.ids)
    ids = np.random.default_rng(0).permutation(g.ids)
    cut = int(0.8 * len(ids))
    tr, te = np.sort(ids[:cut]), np.sort(ids[cut:])
    e, b = SETTINGS[name]
    cfg = sn.SplitNNConfig(epochs=epochs or e, batch_size=b, psi=False)
    gt, ht = g.select(tr), h.select(tr)
    ge, he_ = g.select(te), h.select(te)
    out = {
        "rows": [len(tr), len(te)],
        "features": [g.features.shape[1], h.features.shape[1]],
        "config": vars(cfg),
        "splitnn_float32": split_run(g, h, cfg, tr, te),
        "splitnn_float16": split_run(g, h, replace(cfg, wire_dtype="float16"), tr, te),
        f"splitnn_noise_{noise:g}": split_run(g, h, replace(cfg, noise_std=noise), tr, te),
        "central_same_architecture": central_run({"guest": g, "host": h}, cfg, tr, te),
        "guest_alone_same_bottom_and_top": central_run({"guest": g}, cfg, tr, te),
        "sklearn_lr_joined": sklearn_lr(
            np.hstack([gt.features, ht.features]), gt.labels, np.hstack([ge.features, he_.features]), ge.labels
        ),
        "sklearn_lr_guest_alone": sklearn_lr(gt.features, gt.labels, ge.features, ge.labels),
    }
    out["auc_gap_float32_vs_central"] = round(
        out["splitnn_float32"]["auc"] - out["central_same_architecture"]["auc"], 4
    )
    return out


def warm_up() -> None:
    """Run one tiny split epoch first: torch imports modules on the first backward/step (seconds of CPU)."""
    t = load_vertical("breast")
    ids = np.sort(t["guest"].ids[:64])
    split_run(t["guest"], t["host"], sn.SplitNNConfig(epochs=1, psi=False), ids, ids)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="breast,default_credit")
    parser.add_argument("--epochs", type=int, default=None, help="override the per-data-set epochs")
    parser.add_argument("--noise", type=float, default=0.1, help="std of the activation noise run")
    parser.add_argument("--out", default="benchmarks/results/splitnn.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    warm_up()
    results = {name: bench(name, args.epochs, args.noise) for name in args.data.split(",")}
    print(json.dumps(results, indent=1))
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
