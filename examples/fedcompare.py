"""Federated vs central vs each client alone, for the example projects: every model is trained by `hamrah run`.

The three settings train the same task (the same model, hyper-parameters and number of passes over the data)
and differ only in who holds which examples:

- **federated**: the example's config as written (its clients, its algorithm);
- **central**: every client's examples pooled at one site (`[data] partition = "iid"`, `num_clients = 1`: one
  client doing `rounds x local_epochs` epochs of minibatch SGD over the pooled data, with no privacy section);
- **local**: each client alone (`[task] entry = "fedcompare:alone"` wraps the example's task and keeps one
  natural client's training examples).

Every model is scored on the same test set. Only the public interface is used: the `hamrah run` command and the
run's `manifest.json` / `model.safetensors` (docs/tasks.md, "Getting the model out").

Each run uses one CPU thread (`OMP_NUM_THREADS=1` unless set): on a small machine shared with other jobs, torch's
default of one thread per core made these small models up to 5x slower (measured: the keyboard example's 2
rounds took 77 s with 2 threads and 14 s with one, on 2 cores under a load of ~3.5).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

import hamrah
import hamrah.data
import hamrah.task

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib


def read_config(path: Path) -> dict:
    """Return the TOML config at ``path`` as a dict, its `[task] path` pinned to the config's folder."""
    cfg = tomllib.loads(path.read_text(encoding="utf-8"))
    cfg.setdefault("task", {}).setdefault("path", str(path.resolve().parent))
    return cfg


def central(cfg: dict) -> dict:
    """Return ``cfg`` with every client's examples pooled at one site (and no privacy section)."""
    out = copy.deepcopy(cfg)
    out.pop("privacy", None)
    out["data"] = {**out.get("data", {}), "partition": "iid", "num_clients": 1}
    out["algorithm"] = {**out.get("algorithm", {}), "client_fraction": 1.0}
    return out


def local(cfg: dict, client: str) -> dict:
    """Return ``cfg`` training on natural client ``client``'s examples only (see :func:`alone`)."""
    out = central(cfg)
    task = out["task"]
    kwargs = {"entry": task["entry"], "folder": task["path"], "only": client, "kwargs": task.get("kwargs", {})}
    out["task"] = {"entry": "fedcompare:alone", "path": str(Path(__file__).resolve().parent), "kwargs": kwargs}
    return out


def alone(entry: str, folder: str, only: str, kwargs: dict | None = None) -> hamrah.Task:
    """Return the task ``entry`` names, built with ``kwargs``, training on natural client ``only`` alone.

    The test set, model, loss and metrics are the task's own; ``only`` is a name of ``data()``'s natural
    clients (a file's stem, a client-id value).
    """
    task = hamrah.load_task(entry, kwargs, folder)

    class Alone(type(task)):
        def __init__(self):
            self.__dict__.update(task.__dict__)

        def data(self):
            ds = hamrah.task.task_dataset(task)
            names = list(ds.group_names or ())
            if only not in names:
                raise ValueError(f"no natural client {only!r} (clients: {', '.join(names)})")
            keep = torch.from_numpy(np.flatnonzero(ds.train_groups == names.index(only)))
            train = hamrah.data.ArrayData(ds.train.x[keep], ds.train.y[keep])
            return dataclasses.replace(ds, train=train, train_groups=np.zeros(len(keep), np.int64), group_names=(only,))

    Alone.__name__ = Alone.__qualname__ = type(task).__name__
    return Alone()


def client_names(cfg: dict) -> list[str]:
    """Return the natural clients of ``cfg``'s task (the names `alone` accepts)."""
    task = hamrah.load_task(cfg["task"]["entry"], cfg["task"].get("kwargs"), cfg["task"]["path"])
    return list(hamrah.task.task_dataset(task).group_names)


def settings_of(cfg: dict, federated: str) -> dict[str, dict]:
    """Return the three-way comparison's configs: ``federated`` (the config itself), central (pooled)
    and each client alone."""
    settings = {federated: cfg, "central (pooled)": central(cfg)}
    settings.update({f"alone: {c}": local(cfg, c) for c in client_names(cfg)})
    return settings


def toml_dumps(cfg: dict) -> str:
    """Write a config dict (tables of scalars, lists and inline tables) as TOML."""

    def value(v) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{k} = {value(x)}" for k, x in v.items()) + " }"
        raise TypeError(f"cannot write {type(v).__name__} as TOML")

    lines = []
    for table, body in cfg.items():
        lines.append(f"[{table}]")
        lines += [f"{k} = {value(v)}" for k, v in body.items()]
        lines.append("")
    return "\n".join(lines)


def hamrah_cli(*args: str) -> str:
    """Run the `hamrah` command (this interpreter's) and return its stdout; raise with its stderr on failure."""
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}  # see the note above
    proc = subprocess.run([sys.executable, "-m", "hamrah.cli", *args], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"hamrah {' '.join(args)} failed:\n{proc.stderr}")
    return proc.stdout


def run(cfg: dict, out: Path, rounds: int | None = None) -> dict:
    """Train ``cfg`` with `hamrah run` into ``out`` and return its manifest, plus ``wall_s`` and the summary's
    ``epsilon`` (when the run has one)."""
    out.mkdir(parents=True, exist_ok=True)
    config = out / "config.toml"
    config.write_text(toml_dumps(cfg), encoding="utf-8")
    extra = [] if rounds is None else ["--rounds", str(rounds)]
    start = time.perf_counter()
    hamrah_cli("run", str(config), "--out", str(out / "run"), "--quiet", "--no-plot", "--overwrite", *extra)
    manifest = json.loads((out / "run" / "manifest.json").read_text())
    summary = json.loads((out / "run" / "summary.json").read_text())
    manifest["wall_s"] = round(time.perf_counter() - start, 1)
    manifest["summary"] = {
        k: v for k, v in summary.items() if k in ("epsilon", "delta", "noise_multiplier", "rounds_run")
    }
    manifest["run_dir"] = str(out / "run")
    manifest["config_path"] = str(config)
    return manifest


def markdown_table(rows: list[dict], columns: list[str]) -> str:
    """Return ``rows`` (dicts with a ``setting`` key) as a Markdown table of ``columns``."""

    def cell(v) -> str:
        if isinstance(v, float):
            return f"{v:.4f}" if v == 0 or abs(v) >= 1e-3 else f"{v:.0e}"
        return str(v)

    head = ["setting", *columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(cell(r.get(c, "")) for c in head) + " |" for r in rows]
    return "\n".join(lines)


def compare(settings: dict[str, dict], out: Path, metrics, rounds: int | None = None, seeds=(0,)) -> list[dict]:
    """Run every setting under every seed; return one row per setting: the mean of each metric over the seeds,
    and (with several seeds) its values per seed under ``<metric> per seed``.

    Args:
        settings: name -> config dict.
        out: the folder of the runs (``out/<i>-s<seed>/``).
        metrics: ``manifest -> {name: value}`` (the manifest of each run, as :func:`run` returns it).
        rounds: override every config's ``run.rounds`` (a fast check), or None.
        seeds: the values of ``run.seed``.
    """
    rows = []
    for i, (name, cfg) in enumerate(settings.items()):
        per_seed: list[dict] = []
        for seed in seeds:
            c = copy.deepcopy(cfg)
            c.setdefault("run", {})["seed"] = seed
            per_seed.append(metrics(run(c, out / f"{i}-s{seed}", rounds)))
        row: dict = {"setting": name}
        for key in per_seed[0]:
            values = [m[key] for m in per_seed]
            row[key] = sum(values) / len(values) if all(isinstance(v, (int, float)) for v in values) else values[0]
            if len(seeds) > 1:
                row[f"{key} per seed"] = values
        rows.append(row)
    return rows


def write_report(example: str, report: dict, table: str, results: Path) -> dict:
    """Write ``results/comparison.json`` (the report, with the command that made it) and ``comparison.md``
    (``table``); print the table and return the report."""
    report = {"command": f"python examples/{example}/compare.py", **report}
    results.mkdir(parents=True, exist_ok=True)
    (results / "comparison.json").write_text(json.dumps(report, indent=2) + "\n")
    (results / "comparison.md").write_text(table + "\n")
    print(table)
    return report
