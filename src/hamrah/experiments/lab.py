"""The security lab: every attack against every defence on one federated task, as two tables and a heatmap.

A lab config is an experiment config (``[data]``, ``[model]``, ``[algorithm]``, ``[run]``) plus::

    [lab]
    attacks = ["none", "sign_flip", "backdoor"]      # names of hamrah.attacks.build_attack
    defences = ["mean", "median", "krum"]            # names of hamrah.aggregation.build_aggregator
    malicious_fraction = 0.2                         # share of the population the attacker controls
    [attacks.backdoor]                               # parameters of one attack
    target = 0
    [defences.krum]                                  # parameters of one defence
    f = 4

Every aggregator is checked against the cohort size and every attack built (and its trigger fitted
to the images) before the first round, so a config that cannot work stops with the reason.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hamrah.aggregation import AGGREGATORS, build_aggregator
from hamrah.algorithms.base import cohort_size
from hamrah.attacks import (
    Attack,
    attack_success_rate,
    build_attack,
    choose_malicious,
    main_accuracy,
)
from hamrah.attacks.data import PixelBackdoor
from hamrah.core.errors import ConfigError
from hamrah.experiments.config import ExperimentConfig, from_dict, read_toml
from hamrah.experiments.runner import Prepared, prepare
from hamrah.simulation import SimulationConfig, Simulator, seeded
from hamrah.simulation.reference import RootReference, needs_reference

BEGIN, END = "<!-- lab:begin -->", "<!-- lab:end -->"


@dataclass(frozen=True)
class LabConfig:
    """An experiment plus the attack x defence matrix to run on it."""

    experiment: ExperimentConfig
    attacks: tuple[str, ...]
    defences: tuple[str, ...]
    malicious_fraction: float = 0.2
    attack_params: dict[str, dict] = field(default_factory=dict)
    defence_params: dict[str, dict] = field(default_factory=dict)

    def cohort(self) -> int:
        """Return the clients per round."""
        e = self.experiment
        return cohort_size(e.algorithm.client_fraction, e.data.num_clients or 1)

    def select(self, attacks: list[str] | None = None, defences: list[str] | None = None,
               rounds: int | None = None) -> LabConfig:
        """Return a copy restricted to some of the attacks/defences, or with another round count.

        ``defences`` may also name a registered aggregator the config does not list (e.g. ``fltrust``
        for a run of its own); it is built with its default parameters.
        """
        for chosen, have, what in ((attacks, self.attacks, "attacks"), (defences, self.defences, "defences")):
            extra = AGGREGATORS if what == "defences" else ()
            unknown = [x for x in chosen or [] if x not in have and x not in extra]
            if unknown:
                raise ConfigError(f"--{what}: {', '.join(unknown)} not in lab.{what} ({', '.join(have)})")
        exp = self.experiment if rounds is None else self.experiment.replace("run", rounds=rounds)
        return LabConfig(exp, tuple(attacks or self.attacks), tuple(defences or self.defences),
                         self.malicious_fraction, self.attack_params, self.defence_params)


def load_lab_config(path: str | Path) -> LabConfig:
    """Read and validate a lab TOML file.

    Raises:
        ConfigError: the file is missing or not TOML, or a key, type or value is wrong.
    """
    path = Path(path)
    raw = read_toml(path)
    try:
        return lab_from_dict(raw)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def _names(lab: dict, key: str) -> tuple[str, ...]:
    value = lab.get(key)
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"lab.{key} = {value!r}: expected a non-empty list of names")
    if len(set(value)) != len(value):
        raise ConfigError(f"lab.{key} lists a name twice: {value}")
    return tuple(value)


def _tables(raw: Any, section: str, listed: tuple[str, ...]) -> dict[str, dict]:
    if not isinstance(raw, dict) or not all(isinstance(v, dict) for v in raw.values()):
        raise ConfigError(f"[{section}] must hold one table per name, e.g. [{section}.{listed[0]}]")
    stray = [k for k in raw if k not in listed]
    if stray:
        raise ConfigError(f"[{section}.{stray[0]}] sets parameters of {stray[0]!r}, which lab.{section} does not list")
    return {k: dict(v) for k, v in raw.items()}


def lab_from_dict(raw: dict) -> LabConfig:
    """Validate plain data (as parsed from TOML) into a :class:`LabConfig`; nothing is loaded yet."""
    raw = dict(raw)
    lab = raw.pop("lab", None)
    if not isinstance(lab, dict):
        raise ConfigError("a lab config needs a [lab] table with attacks, defences and malicious_fraction")
    unknown = [k for k in lab if k not in ("attacks", "defences", "malicious_fraction")]
    if unknown:
        raise ConfigError(f"unknown key in [lab] {unknown[0]!r}; expected attacks, defences, malicious_fraction")
    attacks, defences = _names(lab, "attacks"), _names(lab, "defences")
    fraction = lab.get("malicious_fraction", 0.2)
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 <= fraction < 1:
        raise ConfigError(f"lab.malicious_fraction = {fraction!r}: expected a number in [0, 1)")
    attack_params = _tables(raw.pop("attacks", {}), "attacks", attacks)
    defence_params = _tables(raw.pop("defences", {}), "defences", defences)
    cfg = LabConfig(from_dict(raw), attacks, defences, float(fraction), attack_params, defence_params)
    check(cfg)
    return cfg


def build_defence(cfg: LabConfig, name: str):
    """Return a fresh aggregator ``name`` (fresh so that a noisy one restarts its seeded stream)."""
    params = dict(cfg.defence_params.get(name, {}))
    if name == "norm_bound" and params.get("noise_std"):
        params.setdefault("seed", cfg.experiment.run.seed)
    return build_aggregator(name, **params)


def build_lab_attack(cfg: LabConfig, name: str, num_clients: int) -> Attack:
    """Return attack ``name`` played by the config's seeded share of the ``num_clients`` clients."""
    malicious = choose_malicious(num_clients, cfg.malicious_fraction, cfg.experiment.run.seed)
    return build_attack(name, malicious, **cfg.attack_params.get(name, {}))


def check(cfg: LabConfig) -> None:
    """Refuse, with the reason, a lab whose defences or attacks cannot work for its cohort.

    Raises:
        ConfigError: an aggregator refuses the cohort (Krum with K <= 2f + 2, Bulyan with
            K < 4f + 3, a trimmed mean that trims everything, ...), or an attack or defence has an
            unknown name or a bad parameter, or an attack needs malicious clients and gets none.
    """
    k = cfg.cohort()
    for name in cfg.defences:
        try:
            build_defence(cfg, name).check(k)
        except ConfigError as e:
            raise ConfigError(f"defence {name!r} with {k} clients per round cannot work: {e}") from None
    num_clients = cfg.experiment.data.num_clients or 1
    for name in cfg.attacks:
        atk = build_lab_attack(cfg, name, num_clients)
        if name != "none" and not atk.malicious:
            raise ConfigError(f"attack {name!r}: lab.malicious_fraction = {cfg.malicious_fraction} of "
                              f"{num_clients} clients makes no malicious client")


def prepare_lab(cfg: LabConfig) -> Prepared:
    """Load and split the data, build the model; check every backdoor trigger fits the images and
    every root-set defence (FLTrust) can draw its root set and score the algorithm's updates."""
    prep = prepare(cfg.experiment)
    for name in cfg.defences:
        agg = build_defence(cfg, name)
        if needs_reference(agg):
            try:
                RootReference(prep.model_factory(), prep.data, prep.algorithm, agg.root_size, np.random.default_rng(0))
            except ConfigError as e:
                raise ConfigError(f"defence {name!r} cannot work: {e}") from None
    test = prep.data.dataset.test
    for name in cfg.attacks:
        poison = build_lab_attack(cfg, name, prep.data.num_clients).data_poisoning
        if isinstance(poison, PixelBackdoor):
            if test.x.dim() < 3:
                raise ConfigError(f"attack {name!r}: a pixel trigger needs image data, {prep.data.dataset.name} has none")
            poison.stamp(test.x[:1])
    return prep


def run_cell(cfg: LabConfig, prep: Prepared, attack_name: str, defence_name: str) -> dict:
    """Train once under one attack and one defence; return main accuracy and attack success."""
    run = cfg.experiment.run
    sim_cfg = SimulationConfig(rounds=run.rounds, eval_every=run.rounds, seed=run.seed, batched=run.batched,
                               workers=run.workers)
    attack = build_lab_attack(cfg, attack_name, prep.data.num_clients)
    sim = Simulator(seeded(prep.model_factory, run.seed), prep.data, prep.algorithm, sim_cfg,
                    aggregator=build_defence(cfg, defence_name), attack=attack)
    start = time.perf_counter()
    result = sim.run()
    test = prep.data.dataset.test
    acc = main_accuracy(sim.model, result.params, test)
    asr = attack_success_rate(sim.model, result.params, test, attack)
    return {"attack": attack_name, "defence": defence_name, "main_accuracy": acc, "attack_success": asr,
            "malicious_clients": len(attack.malicious), "wall_s": round(time.perf_counter() - start, 2)}


def run_lab(cfg: LabConfig, log: Callable[[str], None] = print, prep: Prepared | None = None) -> list[dict]:
    """Run every (attack, defence) pair; return one row per pair."""
    check(cfg)
    prep = prep or prepare_lab(cfg)
    rows = []
    for a in cfg.attacks:
        for d in cfg.defences:
            rows.append(run_cell(cfg, prep, a, d))
            r = rows[-1]
            asr = "-" if r["attack_success"] is None else f"{r['attack_success']:.3f}"
            log(f"  {a:>18s} x {d:<13s} accuracy {r['main_accuracy']:.4f}  attack success {asr}  ({r['wall_s']} s)")
    return rows


def _pct(v: float | None) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.1f}"


def markdown_tables(rows: list[dict]) -> str:
    """Render the rows as two attack x defence tables: main accuracy and attack success (in %)."""
    attacks = list(dict.fromkeys(r["attack"] for r in rows))
    defences = list(dict.fromkeys(r["defence"] for r in rows))
    cell = {(r["attack"], r["defence"]): r for r in rows}
    out = []
    for key, title in (("main_accuracy", "Main-task test accuracy (%)"),
                       ("attack_success", "Attack success rate (%; targeted attacks only)")):
        out += [f"**{title}**", "", "| attack | " + " | ".join(defences) + " |", "|---|" + "---|" * len(defences)]
        for a in attacks:
            out.append(f"| {a} | " + " | ".join(_pct(cell[(a, d)][key]) if (a, d) in cell else "" for d in defences) + " |")
        out.append("")
    return "\n".join(out)


def plot_heatmap(rows: list[dict], path: Path, title: str = "") -> None:
    """Write a PNG with two heatmaps (main accuracy, attack success), one cell per pair, values printed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    attacks = list(dict.fromkeys(r["attack"] for r in rows))
    defences = list(dict.fromkeys(r["defence"] for r in rows))
    cell = {(r["attack"], r["defence"]): r for r in rows}
    fig, axes = plt.subplots(1, 2, figsize=(2.6 + 1.5 * len(defences), 1.2 + 0.45 * len(attacks)), squeeze=False)
    for ax, key, label, cmap in ((axes[0, 0], "main_accuracy", "main accuracy (%)", "RdYlGn"),
                                 (axes[0, 1], "attack_success", "attack success (%)", "RdYlGn_r")):
        grid = np.full((len(attacks), len(defences)), np.nan)
        for i, a in enumerate(attacks):
            for j, d in enumerate(defences):
                v = cell.get((a, d), {}).get(key)
                grid[i, j] = np.nan if v is None else 100 * v
        ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, vmin=0, vmax=100, aspect="auto")
        for i in range(len(attacks)):
            for j in range(len(defences)):
                ax.text(j, i, "-" if np.isnan(grid[i, j]) else f"{grid[i, j]:.0f}", ha="center", va="center", fontsize=8)
        ax.set_xticks(range(len(defences)), defences, rotation=35, ha="right", fontsize=8)
        ax.set_yticks(range(len(attacks)), attacks, fontsize=8)
        ax.set_title(label, fontsize=10)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_doc(doc: Path, block: str) -> None:
    """Replace the text between the lab markers of ``doc`` with ``block`` (append the markers if absent)."""
    text = doc.read_text(encoding="utf-8") if doc.exists() else "# Security lab\n"
    wrapped = f"{BEGIN}\n{block.rstrip()}\n{END}"
    if BEGIN in text and END in text:
        text = text[: text.index(BEGIN)] + wrapped + text[text.index(END) + len(END):]
    else:
        text = text.rstrip() + "\n\n" + wrapped + "\n"
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(text, encoding="utf-8")


def _describe(cfg: LabConfig, prep: Prepared) -> str:
    e = cfg.experiment
    a = e.algorithm
    return (f"{e.data.dataset} {e.model.name}, {prep.data.num_clients} clients ({e.data.partition}), "
            f"{cfg.cohort()} per round (C = {a.client_fraction}), E = {a.local_epochs}, B = {a.batch_size or 'inf'}, "
            f"lr = {a.lr}, {e.run.rounds} rounds, seed {e.run.seed}; "
            f"{round(cfg.malicious_fraction * prep.data.num_clients)} malicious clients "
            f"({cfg.malicious_fraction:.0%} of the population)")


def main(args: argparse.Namespace) -> None:
    """CLI entry: ``hamrah lab CONFIG [--rounds N] [--attacks a,b] [--defences c,d] [--check]``."""
    split = lambda s: [x for x in s.split(",") if x] if s else None
    cfg = load_lab_config(args.config).select(split(args.attacks), split(args.defences), args.rounds)
    prep = prepare_lab(cfg)
    print(f"hamrah lab: {len(cfg.attacks)} attacks x {len(cfg.defences)} defences; {_describe(cfg, prep)}", flush=True)
    if args.check:
        print("config ok: every defence accepts the cohort and every attack is well formed")
        return
    start = time.perf_counter()
    rows = run_lab(cfg, log=lambda m: print(m, flush=True), prep=prep)
    wall = time.perf_counter() - start
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "lab.json").write_text(json.dumps({"config": str(args.config), "rows": rows, "wall_s": round(wall, 1)},
                                             indent=2) + "\n")
    img = Path(args.img)
    plot_heatmap(rows, img, title=_describe(cfg, prep).split(";")[0])
    command = " ".join(["hamrah lab", str(args.config)] + [f"--{k} {getattr(args, k)}" for k in ("rounds", "attacks", "defences")
                                                           if getattr(args, k) is not None])
    rel = Path(os.path.relpath(img.resolve(), Path(args.doc).resolve().parent))  # the image as the doc links it
    block = (f"Made by `{command}` in {wall / 60:.1f} min ({len(rows)} runs; {_describe(cfg, prep)}).\n\n"
             f"![attack x defence heatmap]({rel.as_posix()})\n\n" + markdown_tables(rows))
    write_doc(Path(args.doc), block)
    print("\n" + markdown_tables(rows))
    print(f"Wrote {out}/lab.json, {img} and the results block of {args.doc} ({wall:.0f} s)")
