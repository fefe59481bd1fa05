"""Next-word prediction across phones: federated, federated with user-level DP (epsilon <= 10 at delta = 1e-8),
central on the pooled text, and single phones alone; top-1 and top-3 accuracy and perplexity on the test lines.

    python examples/keyboard/compare.py       # writes examples/keyboard/results/comparison.{json,md}

Every model is the same tied-embedding LSTM trained by `hamrah run` (see examples/fedcompare.py); the runs go to
runs/compare/keyboard/. Equal work: the federated runs see each phone's text about rounds x client_fraction = 2
times, so the central model trains for 2 epochs of plain minibatch SGD on the pooled text (`fedavg` with one
client; server momentum has no meaning there); a phone alone trains for ALONE_EPOCHS = 20 epochs on its own text
the same way.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
from fedcompare import central, compare, local, markdown_table, read_config, write_report  # noqa: E402
from keyboard_task import Keyboard  # noqa: E402

ALONE_EPOCHS = 20


def sgd(cfg: dict, rounds: int) -> dict:
    """``cfg`` as plain minibatch SGD at one site for ``rounds`` epochs (FedAvg with its only client)."""
    algorithm = {k: v for k, v in cfg["algorithm"].items() if k not in ("server_lr", "beta1")}
    return {**cfg, "algorithm": {**algorithm, "name": "fedavg"}, "run": {**cfg["run"], "rounds": rounds}}


def metrics(manifest: dict) -> dict:
    out = {k: manifest["metrics"][k] for k in ("accuracy", "top3", "perplexity")}
    if "epsilon" in manifest["summary"]:
        out.update({k: manifest["summary"][k] for k in ("epsilon", "delta", "noise_multiplier")})
    return out


def phones(cfg: dict) -> list[str]:
    """The largest phone, and the phones at the 90th and 50th percentile of training windows."""
    ds = Keyboard(**cfg["task"]["kwargs"]).data()
    sizes = np.bincount(ds.train_groups)
    order = np.argsort(-sizes, kind="stable")
    return [ds.group_names[order[int(p * (len(order) - 1))]] for p in (0.0, 0.1, 0.5)]


def main(rounds: int | None = None, out=Path("runs/compare/keyboard"), results=HERE / "results") -> dict:
    cfg, dp = read_config(HERE / "keyboard.toml"), read_config(HERE / "keyboard_dp.toml")
    passes = round(
        (rounds or cfg["run"]["rounds"]) * cfg["algorithm"]["client_fraction"] * cfg["algorithm"]["local_epochs"]
    )
    pooled = sgd(central(cfg), max(passes, 1))
    pooled["run"]["eval_every"] = 1
    settings = {"federated": cfg, "federated + DP": dp, f"central (pooled, {max(passes, 1)} epochs)": pooled}
    alone = {f"alone: {p}": sgd(local(cfg, p), ALONE_EPOCHS) for p in phones(cfg)}
    rows = []
    for i, (name, c) in enumerate({**settings, **alone}.items()):  # --rounds overrides the federated runs only
        rows += compare({name: c}, out / str(i), metrics, rounds if name.startswith("federated") else None)
    report = {"rounds": rounds or cfg["run"]["rounds"], "seeds": [0], "config": copy.deepcopy(cfg["task"]["kwargs"])}
    table = markdown_table(rows, ["accuracy", "top3", "perplexity", "epsilon", "delta"])
    return write_report("keyboard", {**report, "rows": rows}, table, results)


if __name__ == "__main__":
    main()
