"""Vertical LR (CoordinatedLR, SSHE-LR) against central models, and the cost of encryption.

For each data set: central sklearn LogisticRegression (C=1) and XGBoost on the joined, standardised
table, sklearn on the guest's columns alone, and both protocols trained in plaintext mode to
convergence (``--epochs``), encrypted unless ``--train-plaintext`` (the two modes give the same model
within fixed-point rounding, which ``tests/vertical/test_lr.py`` checks).
AUC and accuracy (threshold 0.5) on the training rows.

Cost per epoch, in CPU-seconds of all parties together (``time.process_time`` over the threads of
``run_parties``): the plaintext protocol and the Paillier protocol (``--key-bits``, 2048) run in the
same process on ``--enc-rows`` rows (the first ones; all rows when 0), each as a short and a longer
run whose difference gives the steady-state epoch (key generation and tables are one-off), split into
the offline part (random factors of the encryptions, made at the start of the epoch) and the online
part (everything else), for Paillier and for OU (``--scheme`` sets the training runs' scheme);
time per epoch grows linearly
with rows (every row is encrypted once or twice and enters ``X^T [[d]]`` once), so the full-data
figure is scaled by rows and said so. Bytes per epoch from the channels' counts. Writes
``benchmarks/results/vertical_lr.json``.

    python benchmarks/bench_vertical_lr.py --data breast --enc-rows 0
    python benchmarks/bench_vertical_lr.py --data default_credit --profile 1000 --batch-size 1024 --transform quantile
    python benchmarks/bench_vertical_lr.py --data default_credit --train-plaintext --enc-rows 0 --batch-size 1024 \
        --lr 0.3 --epochs 20 --transform quantile --schemes ou --protocols coordinated_lr \
        --out benchmarks/results/vertical_lr_default_credit_full_ou.json   # a measured full epoch, OU
    python benchmarks/bench_vertical_lr.py --data default_credit --train-plaintext --enc-rows 1000 \
        --batch-size 1024 --lr 0.3 --epochs 20 --transform quantile \
        --out benchmarks/results/vertical_lr_default_credit.json
    python benchmarks/bench_vertical_lr.py --data default_credit --train-plaintext --enc-rows 1000 \
        --batch-size 1024 --lr 0.3 --epochs 20 --clip 3 --out benchmarks/results/vertical_lr_default_credit_clip.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, roc_auc_score

from hamrah.data.vertical import PartyTable, load_vertical
from hamrah.vertical import lr_coordinated, lr_sshe, run_parties
from hamrah.vertical.lr_common import LRConfig, standardise
from hamrah.vertical.lr_ops import SCHEMES

PROTOCOLS = {"coordinated_lr": lr_coordinated, "sshe_lr": lr_sshe}


def _metrics(y: np.ndarray, score: np.ndarray) -> dict:
    return {"auc": round(float(roc_auc_score(y, score)), 4), "accuracy": round(float(accuracy_score(y, score > 0)), 4)}


def _taylor_optimum(z: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Scores of the exact minimiser of the protocols' loss (Taylor at 0, l2 = 1/rows): a linear solve."""
    zi = np.hstack([z, np.ones((len(z), 1))])
    w = np.linalg.solve(0.25 * zi.T @ zi / len(z) + np.eye(zi.shape[1]) / len(z), zi.T @ (y - 0.5) / len(z))
    return zi @ w


def central(g: PartyTable, h: PartyTable, clip: float, transform: str = "standard") -> dict:
    """Central models on the joined table, its columns transformed exactly as the parties transform theirs."""
    from xgboost import XGBClassifier

    x = np.hstack([g.features, h.features])
    z = standardise(x, None, False, clip, transform)[0]  # column-wise: the same as each party on its own
    y, dg = g.labels, g.features.shape[1]
    lr = LogisticRegression(max_iter=5000).fit(z, y)
    guest = LogisticRegression(max_iter=5000).fit(z[:, :dg], y)
    xgb = XGBClassifier(n_estimators=100, max_depth=3, learning_rate=0.3, n_jobs=1).fit(x, y)
    margin = xgb.predict(x, output_margin=True)
    out = {
        "central_sklearn_lr": _metrics(y, lr.decision_function(z)),
        "central_xgboost": _metrics(y, margin),
        "guest_alone_lr": _metrics(y, guest.decision_function(z[:, :dg])),
    }
    out["taylor_optimum"] = _metrics(y, _taylor_optimum(z, y))
    if clip or transform != "standard":
        plain = standardise(x, None, False)[0]
        out["taylor_optimum_unclipped"] = _metrics(y, _taylor_optimum(plain, y))
        out["central_sklearn_lr_unclipped"] = _metrics(
            y, LogisticRegression(max_iter=5000).fit(plain, y).decision_function(plain)
        )
    return out


def _roles(mod, g, h, cfg):
    roles = {"guest": lambda ch: mod.guest(ch, g, cfg), "host": lambda ch: mod.host(ch, h, cfg)}
    if mod is lr_coordinated:
        roles["arbiter"] = lambda ch: mod.arbiter(ch, None, cfg)
    return roles


def _run(mod, g, h, cfg):
    cpu = time.process_time()
    res, stats = run_parties(_roles(mod, g, h, cfg), timeout_s=3600)
    return res, time.process_time() - cpu, sum(s.total_bytes for s in stats.values()) // 2


def federated(mod, g, h, cfg: LRConfig) -> dict:
    res, cpu, _ = _run(mod, g, h, cfg)
    zg = standardise(g.features, res["guest"], True, cfg.clip, cfg.transform)[0]
    zh = standardise(h.features, res["host"], False, cfg.clip, cfg.transform)[0]
    epochs = res["guest"].epoch
    return {
        **_metrics(g.labels, zg @ res["guest"].weights + zh @ res["host"].weights),
        "epochs": epochs,
        "converged": res["guest"].converged,
        "encrypted": cfg.encrypted,
        "train_cpu_s_per_epoch": round(cpu / epochs, 4),
    }


def _per_epoch(mod, g, h, cfg: LRConfig, few: int, many: int) -> dict:
    """Steady-state cost of one epoch: (runs of ``many`` minus ``few`` epochs) / (many - few), so key
    generation and tables (one-off) drop out; the offline part (random factors made ahead) kept apart."""
    runs = []
    for epochs in (few, many):
        res, cpu, sent = _run(mod, g, h, LRConfig(**{**cfg.__dict__, "epochs": epochs, "tol": 0.0}))
        runs.append((cpu, sum(s.offline_cpu_s for s in res.values()), sent))
    k = many - few
    total, offline = (runs[1][0] - runs[0][0]) / k, (runs[1][1] - runs[0][1]) / k
    return {
        "cpu_s": total,
        "offline_cpu_s": offline,
        "online_cpu_s": total - offline,
        "one_off_cpu_s": runs[0][0] - few * total,
        "bytes": (runs[1][2] - runs[0][2]) // k,
    }


def cost(mod, g, h, cfg: LRConfig, rows: int, schemes=SCHEMES) -> dict:
    """CPU-seconds per epoch, plaintext then Paillier, on the first ``rows`` rows (all when 0)."""
    if rows:
        g, h = g.select(g.ids[:rows]), h.select(g.ids[:rows])
    plain = _per_epoch(mod, g, h, LRConfig(**{**cfg.__dict__, "encrypted": False}), 1, 21)
    r = {
        "rows": len(g.ids),
        "guest_features": g.features.shape[1],
        "host_features": h.features.shape[1],
        "plain_cpu_s": round(plain["cpu_s"], 5),
        "plain_bytes": plain["bytes"],
    }
    for scheme in schemes:  # "paillier_*" and "ou_*" keys
        enc = _per_epoch(mod, g, h, LRConfig(**{**cfg.__dict__, "encrypted": True, "scheme": scheme}), 1, 3)
        r.update({f"{scheme}_{k}": round(v, 3) for k, v in enc.items()})
        r[f"{scheme}_he_overhead_total"] = round(enc["cpu_s"] / plain["cpu_s"], 1)
        r[f"{scheme}_he_overhead_online"] = round(enc["online_cpu_s"] / plain["cpu_s"], 1)
    return r


def profile(mod, g, h, cfg: LRConfig, rows: int) -> dict:
    """Where one encrypted epoch's CPU goes: thread CPU-seconds inside each ``he`` / ops call (all parties)."""
    from hamrah.vertical import he, lr_ops

    spent: dict[str, list] = {}

    def wrap(owner, name, label):
        inner = getattr(owner, name)

        def timed(*a, **k):
            t = time.thread_time()
            try:
                return inner(*a, **k)
            finally:
                spent.setdefault(label, [0.0, 0])
                spent[label][0] += time.thread_time() - t
                spent[label][1] += 1

        setattr(owner, name, timed)
        return inner

    targets = [(he, n, f"he.{n}") for n in ("keygen", "matvec", "decrypt", "add_plain")]
    targets += [(he.PublicKey, "__post_init__", "public key table"), (he.KeyHolderEncryptor, "__init__", "CRT tables")]
    targets += [(lr_ops.ObfuscatorPool, "fill", "random factors (offline)"), (lr_ops.PaillierOps, "mask", "pack+mask")]
    saved = [(o, n, wrap(o, n, label)) for o, n, label in targets]
    try:
        g, h = g.select(g.ids[:rows]), h.select(g.ids[:rows])
        _, cpu, _ = _run(mod, g, h, LRConfig(**{**cfg.__dict__, "epochs": 1, "tol": 0.0, "encrypted": True}))
    finally:
        for o, n, inner in saved:
            setattr(o, n, inner)
    return {
        "rows": rows,
        "cpu_s": round(cpu, 3),
        **{k: {"cpu_s": round(v[0], 3), "calls": v[1]} for k, v in sorted(spent.items(), key=lambda kv: -kv[1][0])},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="breast")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.5)
    parser.add_argument("--clip", type=float, default=0.0)
    parser.add_argument("--transform", default="standard", choices=("standard", "quantile"))
    parser.add_argument("--key-bits", type=int, default=2048)
    parser.add_argument("--scheme", default="paillier", choices=SCHEMES)
    parser.add_argument("--schemes", default=",".join(SCHEMES), help="schemes whose cost per epoch is measured")
    parser.add_argument("--protocols", default=",".join(PROTOCOLS))
    parser.add_argument("--enc-rows", type=int, default=0)
    parser.add_argument("--train-plaintext", action="store_true", help="train the AUC runs in plaintext mode")
    parser.add_argument("--out", default=None)
    parser.add_argument("--profile", type=int, default=0, help="only profile one encrypted epoch on this many rows")
    args = parser.parse_args()
    d = load_vertical(args.data)
    g = d["guest"]
    h = d["host"].select(g.ids)
    cfg = LRConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        l2=1.0 / len(g.ids),
        tol=1e-4,
        key_bits=args.key_bits,
        clip=args.clip,
        transform=args.transform,
        psi=False,
        scheme=args.scheme,
        encrypted=not args.train_plaintext,
    )
    if args.profile:
        for name, mod in PROTOCOLS.items():
            print(name, json.dumps(profile(mod, g, h, cfg, args.profile)), flush=True)
        return
    out = {"data": args.data, "rows": len(g.ids), "settings": cfg.__dict__, **central(g, h, args.clip, args.transform)}
    print(json.dumps({k: v for k, v in out.items() if k != "settings"}), flush=True)
    for name, mod in PROTOCOLS.items():
        if name not in args.protocols.split(","):
            continue
        out[name] = {**federated(mod, g, h, cfg), "cost": cost(mod, g, h, cfg, args.enc_rows, args.schemes.split(","))}
        c = out[name]["cost"]
        for scheme in args.schemes.split(","):
            for key in ("cpu_s", "online_cpu_s", "bytes"):
                c[f"{scheme}_{key}_per_full_epoch"] = round(c[f"{scheme}_{key}"] * len(g.ids) / c["rows"], 1)
        print(name, json.dumps(out[name]), flush=True)
    path = Path(args.out or f"benchmarks/results/vertical_lr_{args.data}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2, default=str))


if __name__ == "__main__":
    main()
