"""Federated transfer learning on settings built from the bundled vertical splits; plain against Paillier.

Setting (``hamrah.vertical.ftl.transfer_split``): a seeded ``--overlap`` fraction of the ids is shared
by both parties; the rest is split in half: the guest keeps its features and labels of one half, the
host its features (no labels) of the other. FTL is scored on the host's non-overlap rows against their
held-out labels, beside:

- the label holder alone, applied where it can be: logistic regression on the guest's features and
  labels. The guest has no features for the host's other rows, so on them it can only give every row
  the same score (its positive rate): AUC 0.5. This is the comparison the issue asks for;
- the label holder alone with features it does not have (an oracle, optimistic): the same model
  applied to the guest's features of the host's rows, which only this simulation holds;
- the host with the overlap's labels: logistic regression on the host's features of the overlap (what
  the host could do if the guest simply handed it the overlap's labels);
- the host with every label: logistic regression fitted and scored on the host's rows with their held-out
  labels (in-sample; a linear reference, not a bound on FTL).

With ``--select`` (breast), FTL's settings are chosen by 5-fold cross-validation on the overlap
(each fold's overlap rows are held out of training, labels included, and scored through the host as
host-only rows; AUC against the guest's labels of those rows), never on the host's other rows: the
grid ``dim`` x ``epochs`` x ``gamma`` below, the chosen settings then trained on the whole overlap.

Then plain against Paillier (``--key-bits``, default 2048) for ``--he-epochs`` on the breast setting:
CPU seconds per epoch (both parties, process time, one torch thread), bytes per epoch, the overhead
ratio and the largest difference between the two modes' scores. Results in ``benchmarks/results/ftl.json``.

    python benchmarks/bench_ftl.py --select breast
    python benchmarks/bench_ftl.py --data breast --key-bits 1024   # a quick look
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
from hamrah.vertical import ftl, run_parties
from hamrah.vertical.nets import roc_auc

EPOCHS = {"breast": 20, "default_credit": 5}


def run(split, cfg) -> tuple[dict, dict, float]:
    t0 = time.process_time()
    res, stats = run_parties(
        {
            "guest": lambda c: ftl.guest(c, split.guest, split.overlap, cfg),
            "host": lambda c: ftl.host(c, split.host, split.overlap, cfg, split.host_only),
        },
        timeout_s=3600,
    )
    return res, stats, time.process_time() - t0


GRID = {"dim": (4, 8), "epochs": (20, 60), "gamma": (0.1, 1.0)}


def cross_validate(split, cfg, folds: int = 5) -> float:
    """AUC of ``cfg`` on held-out overlap rows: each fold trained without those rows (nor their labels)."""
    labels = dict(zip(split.guest.ids.tolist(), split.guest.labels.tolist()))
    order = np.random.default_rng(0).permutation(split.overlap)
    scores, ys = [], []
    for f in range(folds):
        held = np.sort(order[f::folds])
        guest = split.guest.select(np.setdiff1d(split.guest.ids, held))
        fold = ftl.TransferSplit(guest, split.host, np.setdiff1d(split.overlap, held), held, np.zeros(0))
        res, _, _ = run(fold, cfg)
        scores.append(res["host"].scores)
        ys.append([labels[i] for i in held.tolist()])
    return round(roc_auc(np.concatenate(ys), np.concatenate(scores)), 4)


def select(split, base) -> tuple[object, list]:
    """The grid point with the best cross-validated AUC on the overlap (ties: the first)."""
    table = []
    for dim in GRID["dim"]:
        for epochs in GRID["epochs"]:
            for gamma in GRID["gamma"]:
                cfg = replace(base, dim=dim, epochs=epochs, gamma=gamma)
                table.append(({"dim": dim, "epochs": epochs, "gamma": gamma}, cross_validate(split, cfg)))
    best = max(table, key=lambda row: row[1])[0]
    return replace(base, **best), [{**k, "cv_auc": v} for k, v in table]


def lr_auc(x_tr, y_tr, x_te, y_te) -> float:
    model = LogisticRegression(max_iter=5000).fit(x_tr, y_tr)
    return round(roc_auc(y_te, model.decision_function(x_te)), 4)


def accuracy(name: str, overlap: float, choose: bool = False) -> dict:
    tables = load_vertical(name)
    split = ftl.transfer_split(tables, overlap, seed=0)
    cfg, grid = ftl.FTLConfig(epochs=EPOCHS[name]), None
    if choose:
        cfg, grid = select(split, cfg)
    res, stats, cpu = run(split, cfg)
    y = split.host_only_labels
    host_ov, host_only = split.host.select(split.overlap), split.host.select(split.host_only)
    labels_ov = split.guest.select(split.overlap).labels
    return {
        "ids": {
            "overlap": len(split.overlap),
            "guest_only": len(split.guest.ids) - len(split.overlap),
            "host_only": len(split.host_only),
        },
        "config": vars(cfg),
        "ftl_auc": round(roc_auc(y, res["host"].scores), 4),
        "ftl_accuracy": round(float(np.mean((res["host"].scores >= 0) == (y == 1))), 4),
        "guest_alone_lr_auc": round(roc_auc(y, np.full(len(y), split.guest.labels.mean())), 4),
        "guest_alone_oracle_features_lr_auc": lr_auc(
            split.guest.features, split.guest.labels, tables["guest"].select(split.host_only).features, y
        ),
        "host_overlap_labels_lr_auc": lr_auc(host_ov.features, labels_ov, host_only.features, y),
        "host_all_labels_lr_auc_in_sample": lr_auc(host_only.features, y, host_only.features, y),
        "cpu_s_per_epoch": round(cpu / cfg.epochs, 3),
        "bytes_per_epoch": stats["guest"].total_bytes // cfg.epochs,
        "train_loss": [round(v, 4) for v in res["guest"].train_loss],
        **({"cross_validation": grid} if grid else {}),
    }


def he_overhead(key_bits: int, epochs: int, overlap: float) -> dict:
    split = ftl.transfer_split(load_vertical("breast"), overlap, seed=0)
    plain = ftl.FTLConfig(epochs=epochs, key_bits=key_bits)
    rp, sp, cp = run(split, plain)
    re_, se, ce = run(split, replace(plain, mode="paillier"))
    steps = epochs * -(-len(split.overlap) // plain.batch_size)
    return {
        "key_bits": key_bits,
        "epochs": epochs,
        "steps": steps,
        "overlap": len(split.overlap),
        "plain_cpu_s_per_epoch": round(cp / epochs, 3),
        "paillier_cpu_s_per_epoch": round(ce / epochs, 2),
        "overhead_ratio": round(ce / cp, 1),
        "plain_bytes_per_epoch": sp["guest"].total_bytes // epochs,
        "paillier_bytes_per_epoch": se["guest"].total_bytes // epochs,
        "max_abs_score_difference": float(np.abs(re_["host"].scores - rp["host"].scores).max()),
        "auc_plain": round(roc_auc(split.host_only_labels, rp["host"].scores), 4),
        "auc_paillier": round(roc_auc(split.host_only_labels, re_["host"].scores), 4),
    }


def warm_up() -> None:
    """Run one tiny FTL epoch first: torch imports modules on the first backward/step (seconds of CPU)."""
    split = ftl.transfer_split(load_vertical("breast"), 0.1, seed=0)
    run(split, ftl.FTLConfig(epochs=1, hidden=(4,), dim=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="breast,default_credit")
    parser.add_argument("--overlap", type=float, default=0.1)
    parser.add_argument("--key-bits", type=int, default=2048)
    parser.add_argument("--he-epochs", type=int, default=1)
    parser.add_argument("--select", default="", help="data sets whose settings are chosen by cross-validation")
    parser.add_argument("--out", default="benchmarks/results/ftl.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    warm_up()
    chosen = set(filter(None, args.select.split(",")))
    results = {name: accuracy(name, args.overlap, name in chosen) for name in args.data.split(",")}
    results["plain_vs_paillier_breast"] = he_overhead(args.key_bits, args.he_epochs, args.overlap)
    print(json.dumps(results, indent=1))
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
