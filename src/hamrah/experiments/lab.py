"""The security lab: every attack against every defence on one federated task, as two tables and a heatmap.

A lab config is an experiment config (``[data]``, ``[model]``, ``[algorithm]``, ``[run]``) plus::

    [lab]
    attacks = ["none", "sign_flip", "backdoor"]      # names of hamrah.attacks.build_attack
    defences = ["mean", "median", "krum"]            # names of hamrah.aggregation.build_aggregator
    malicious_fraction = 0.2                         # share of the population the attacker controls
    seeds = [0, 1, 2]                                # optional: one run per seed (default: run.seed)
    [attacks.backdoor]                               # parameters of one attack
    target = 0
    [defences.krum]                                  # parameters of one defence
    f = 4

Every aggregator is checked against the cohort size and every attack built (and its trigger fitted
to the images) before the first round, so a config that cannot work stops with the reason.

Each seed changes the partition, the model initialisation, the malicious clients and the sampling.
Under every defence and seed the lab also trains without attack, and scores each targeted attack's
inputs on that clean model: the rate a model reaches without any attacker (the baseline the attack
success is read against). Results go to the ``--out`` folder; ``--update-doc`` also rewrites the
results block of ``docs/security.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from hamrah.aggregation import AGGREGATORS, build_aggregator
from hamrah.algorithms.base import cohort_size
from hamrah.attacks import (
    TARGETED,
    Attack,
    attack_success_rate,
    build_attack,
    choose_malicious,
    main_accuracy,
)
from hamrah.core.errors import ConfigError
from hamrah.experiments.config import ExperimentConfig, from_dict, read_toml
from hamrah.experiments.lab_report import (
    BEGIN,
    END,
    markdown_tables,
    plot_heatmap,
    summarize,
    write_doc,
)
from hamrah.experiments.runner import Prepared, prepare
from hamrah.simulation import SimulationConfig, Simulator, seeded
from hamrah.simulation.reference import RootReference, needs_reference

__all__ = [
    "BEGIN",
    "END",
    "LabConfig",
    "lab_from_dict",
    "load_lab_config",
    "main",
    "markdown_tables",
    "run_lab",
    "summarize",
    "write_doc",
]


@dataclass(frozen=True)
class LabConfig:
    """An experiment plus the attack x defence matrix to run on it."""

    experiment: ExperimentConfig
    attacks: tuple[str, ...]
    defences: tuple[str, ...]
    malicious_fraction: float = 0.2
    attack_params: dict[str, dict] = field(default_factory=dict)
    defence_params: dict[str, dict] = field(default_factory=dict)
    seeds: tuple[int, ...] = ()

    def run_seeds(self) -> tuple[int, ...]:
        """Return the seeds to run: ``seeds``, or the experiment's ``run.seed``."""
        return self.seeds or (self.experiment.run.seed,)

    def for_seed(self, seed: int) -> LabConfig:
        """Return this lab with ``run.seed`` = ``seed`` (partition, initialisation, attackers, sampling)."""
        return replace(self, experiment=self.experiment.replace("run", seed=seed), seeds=(seed,))

    def cohort(self) -> int:
        """Return the clients per round."""
        e = self.experiment
        return cohort_size(e.algorithm.client_fraction, e.data.num_clients or 1)

    def select(
        self,
        attacks: list[str] | None = None,
        defences: list[str] | None = None,
        rounds: int | None = None,
        seeds: list[int] | None = None,
    ) -> LabConfig:
        """Return a copy restricted to some of the attacks/defences, or with another round count or seeds.

        ``defences`` may also name a registered aggregator the config does not list (e.g. ``fltrust``
        for a run of its own); it is built with its default parameters.
        """
        for chosen, have, what in ((attacks, self.attacks, "attacks"), (defences, self.defences, "defences")):
            extra = AGGREGATORS if what == "defences" else ()
            unknown = [x for x in chosen or [] if x not in have and x not in extra]
            if unknown:
                raise ConfigError(f"--{what}: {', '.join(unknown)} not in lab.{what} ({', '.join(have)})")
        exp = self.experiment if rounds is None else self.experiment.replace("run", rounds=rounds)
        return LabConfig(
            exp,
            tuple(attacks or self.attacks),
            tuple(defences or self.defences),
            self.malicious_fraction,
            self.attack_params,
            self.defence_params,
            _seeds(seeds) if seeds is not None else self.seeds,
        )


def load_lab_config(path: str | Path) -> LabConfig:
    """Read and validate a lab TOML file.

    Raises:
        ConfigError: the file is missing or not TOML, or a key, type or value is wrong.
    """
    path = Path(path)
    raw = read_toml(path)
    try:
        return lab_from_dict(raw, path.parent)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def _names(lab: dict, key: str) -> tuple[str, ...]:
    value = lab.get(key)
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"lab.{key} = {value!r}: expected a non-empty list of names")
    if len(set(value)) != len(value):
        raise ConfigError(f"lab.{key} lists a name twice: {value}")
    return tuple(value)


def _seeds(value: Any) -> tuple[int, ...]:
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value)
    ):
        raise ConfigError(f"lab.seeds = {value!r}: expected a non-empty list of integers >= 0")
    if len(set(value)) != len(value):
        raise ConfigError(f"lab.seeds lists a seed twice: {value}")
    return tuple(value)


def _tables(raw: Any, section: str, listed: tuple[str, ...]) -> dict[str, dict]:
    if not isinstance(raw, dict) or not all(isinstance(v, dict) for v in raw.values()):
        raise ConfigError(f"[{section}] must hold one table per name, e.g. [{section}.{listed[0]}]")
    stray = [k for k in raw if k not in listed]
    if stray:
        raise ConfigError(f"[{section}.{stray[0]}] sets parameters of {stray[0]!r}, which lab.{section} does not list")
    return {k: dict(v) for k, v in raw.items()}


def lab_from_dict(raw: dict, base: str | Path | None = None) -> LabConfig:
    """Validate plain data (as parsed from TOML) into a :class:`LabConfig`; nothing is loaded yet."""
    raw = dict(raw)
    lab = raw.pop("lab", None)
    if not isinstance(lab, dict):
        raise ConfigError("a lab config needs a [lab] table with attacks, defences and malicious_fraction")
    unknown = [k for k in lab if k not in ("attacks", "defences", "malicious_fraction", "seeds")]
    if unknown:
        raise ConfigError(f"unknown key in [lab] {unknown[0]!r}; expected attacks, defences, malicious_fraction, seeds")
    attacks, defences = _names(lab, "attacks"), _names(lab, "defences")
    fraction = lab.get("malicious_fraction", 0.2)
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 <= fraction < 1:
        raise ConfigError(f"lab.malicious_fraction = {fraction!r}: expected a number in [0, 1)")
    attack_params = _tables(raw.pop("attacks", {}), "attacks", attacks)
    defence_params = _tables(raw.pop("defences", {}), "defences", defences)
    seeds = _seeds(lab["seeds"]) if "seeds" in lab else ()
    cfg = LabConfig(from_dict(raw, base), attacks, defences, float(fraction), attack_params, defence_params, seeds)
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
            raise ConfigError(
                f"attack {name!r}: lab.malicious_fraction = {cfg.malicious_fraction} of "
                f"{num_clients} clients makes no malicious client"
            )


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
        if hasattr(poison, "stamp"):  # a pixel trigger (backdoor, model replacement, DBA)
            if test.x.dim() < 3:
                raise ConfigError(
                    f"attack {name!r}: a pixel trigger needs image data, {prep.data.dataset.name} has none"
                )
            poison.stamp(test.x[:1])
    return prep


def _train(cfg: LabConfig, prep: Prepared, attack: Attack, defence_name: str):
    run = cfg.experiment.run
    sim_cfg = SimulationConfig(
        rounds=run.rounds, eval_every=run.rounds, seed=run.seed, batched=run.batched, workers=run.workers
    )
    sim = Simulator(
        seeded(prep.model_factory, run.seed),
        prep.data,
        prep.algorithm,
        sim_cfg,
        aggregator=build_defence(cfg, defence_name),
        attack=attack,
        task=prep.task,
    )
    return sim.model, sim.run().params


def run_cell(cfg: LabConfig, prep: Prepared, attack_name: str, defence_name: str, clean: tuple | None = None) -> dict:
    """Train once under one attack and one defence at ``cfg``'s ``run.seed``.

    Args:
        cfg: the lab, at the seed to run.
        prep: its prepared data and model.
        attack_name: the attack.
        defence_name: the defence.
        clean: (model, params) trained without attack under the same defence and seed, or None.

    Returns:
        A row: attack, defence, seed, main_accuracy, attack_success (None when untargeted),
        clean_success (the attack's inputs on the clean model; None without one or untargeted),
        malicious_clients, wall_s, and ``_model`` / ``_params`` (the trained model, not for JSON).
    """
    attack = build_lab_attack(cfg, attack_name, prep.data.num_clients)
    start = time.perf_counter()
    model, params = _train(cfg, prep, attack, defence_name)
    test = prep.data.dataset.test
    base = None if clean is None else attack_success_rate(clean[0], clean[1], test, attack)
    return {
        "attack": attack_name,
        "defence": defence_name,
        "seed": cfg.experiment.run.seed,
        "main_accuracy": main_accuracy(model, params, test),
        "attack_success": attack_success_rate(model, params, test, attack),
        "clean_success": base,
        "malicious_clients": len(attack.malicious),
        "wall_s": round(time.perf_counter() - start, 2),
        "_model": model,
        "_params": params,
    }


def run_lab(
    cfg: LabConfig,
    log: Callable[[str], None] = print,
    prep: Prepared | None = None,
    on_row: Callable[[dict], None] | None = None,
) -> list[dict]:
    """Run every (attack, defence) pair at every seed; return one row per pair and seed.

    Under each defence and seed the clean model (attack ``none``) is trained first, also when the
    config does not list ``none`` (its row is then left out), so each targeted attack's success can
    be read against the rate the clean model already gives its inputs.

    Args:
        cfg: the lab.
        log: called with one line per finished cell.
        prep: the prepared data of a single-seed lab (prepared here when None or with several seeds).
        on_row: called with each finished row (e.g. to save progress).
    """
    check(cfg)
    rows = []
    seeds = cfg.run_seeds()
    preps = {seeds[0]: prep} if prep is not None and len(seeds) == 1 else {}
    for d in cfg.defences:  # defence-major: a run stopped early leaves whole defences, every seed
        for seed in seeds:
            one = cfg.for_seed(seed)
            p = preps[seed] if seed in preps else preps.setdefault(seed, prepare_lab(one))
            clean = None
            for a in ("none",) + tuple(x for x in cfg.attacks if x != "none"):
                if a == "none" and "none" not in cfg.attacks and not any(x in TARGETED for x in cfg.attacks):
                    continue
                r = run_cell(one, p, a, d, clean if a in TARGETED else None)
                if a == "none":
                    clean = (r["_model"], r["_params"])
                    if "none" not in cfg.attacks:
                        continue
                row = {k: v for k, v in r.items() if not k.startswith("_")}
                rows.append(row)
                if on_row is not None:
                    on_row(row)
                asr = "-" if row["attack_success"] is None else f"{row['attack_success']:.3f}"
                log(
                    f"  seed {seed} {a:>18s} x {d:<13s} accuracy {row['main_accuracy']:.4f}  attack success {asr}"
                    f"  ({row['wall_s']} s)"
                )
    order = {a: i for i, a in enumerate(cfg.attacks)}
    return sorted(rows, key=lambda r: (r["seed"], order[r["attack"]], cfg.defences.index(r["defence"])))


def _describe(cfg: LabConfig, prep: Prepared) -> str:
    e = cfg.experiment
    a = e.algorithm
    seeds = cfg.run_seeds()
    seed_text = "seeds " + ", ".join(map(str, seeds)) if len(seeds) > 1 else f"seed {seeds[0]}"
    return (
        f"{e.data.dataset} {e.model.name}, {prep.data.num_clients} clients ({e.data.partition}), "
        f"{cfg.cohort()} per round (C = {a.client_fraction}), E = {a.local_epochs}, B = {a.batch_size or 'inf'}, "
        f"lr = {a.lr}, {e.run.rounds} rounds, {seed_text}; "
        f"{round(cfg.malicious_fraction * prep.data.num_clients)} malicious clients "
        f"({cfg.malicious_fraction:.0%} of the population)"
    )


def _command(args: argparse.Namespace) -> str:
    opts = [
        f"--{k} {getattr(args, k)}"
        for k in ("rounds", "attacks", "defences", "seeds")
        if getattr(args, k, None) is not None
    ]
    return " ".join(["hamrah lab", str(args.config), *opts])


def _split(s: str | None) -> list[str] | None:
    """``"a,b,"`` -> ``["a", "b"]``; None or ``""`` (the option not given) -> None."""
    return [x for x in s.split(",") if x] if s else None


def main(args: argparse.Namespace) -> None:
    """CLI entry: ``hamrah lab CONFIG [--rounds N] [--attacks a,b] [--defences c,d] [--seeds 0,1,2] [--check]
    [--out DIR] [--update-doc [--doc docs/security.md --img docs/img/security_heatmap.png]]``.

    Writes ``lab.json`` (every row, per seed), ``rows.jsonl`` (each row as it finishes), ``results.md``
    (the tables) and ``heatmap.png`` into ``--out``; only with ``--update-doc`` does it also rewrite the
    results block of ``--doc`` and the image ``--img``.
    """
    seeds = getattr(args, "seeds", None)
    try:
        seed_list = [int(x) for x in _split(seeds)] if seeds else None
    except ValueError:
        raise ConfigError(f"--seeds {seeds}: expected comma-separated integers, e.g. 0,1,2") from None
    cfg = load_lab_config(args.config).select(_split(args.attacks), _split(args.defences), args.rounds, seed_list)
    prep = prepare_lab(cfg.for_seed(cfg.run_seeds()[0]))
    print(f"hamrah lab: {len(cfg.attacks)} attacks x {len(cfg.defences)} defences; {_describe(cfg, prep)}", flush=True)
    if args.check:
        print("config ok: every defence accepts the cohort and every attack is well formed")
        return
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    progress = out / "rows.jsonl"
    progress.write_text("")

    def save(row: dict) -> None:
        with progress.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")

    start = time.perf_counter()
    from hamrah.experiments.progress import work_progress

    cells = len(cfg.defences) * len(cfg.run_seeds()) * len(cfg.attacks)  # one row per cell
    with work_progress(cells, "lab", "cells") as step:  # a bar on a terminal, plain lines otherwise
        rows = run_lab(cfg, log=step, prep=prep, on_row=save)
    wall = time.perf_counter() - start
    summary = summarize(rows)
    (out / "lab.json").write_text(
        json.dumps(
            {
                "config": str(args.config),
                "command": _command(args),
                "rows": rows,
                "summary": summary,
                "wall_s": round(wall, 1),
            },
            indent=2,
        )
        + "\n"
    )
    title = _describe(cfg, prep).split(";")[0]
    head = f"Made by `{_command(args)}` in {wall / 60:.1f} min ({len(rows)} runs; {_describe(cfg, prep)})."
    plot_heatmap(summary, out / "heatmap.png", title=title)
    (out / "results.md").write_text(
        head + "\n\n![attack x defence heatmap](heatmap.png)\n\n" + markdown_tables(summary)
    )
    print("\n" + markdown_tables(summary))
    written = f"{out}/lab.json, {out}/results.md, {out}/heatmap.png"
    if getattr(args, "update_doc", False):
        img, doc = Path(args.img), Path(args.doc)
        plot_heatmap(summary, img, title=title)
        rel = Path(os.path.relpath(img.resolve(), doc.resolve().parent))  # the image as the doc links it
        write_doc(doc, f"{head}\n\n![attack x defence heatmap]({rel.as_posix()})\n\n" + markdown_tables(summary))
        written += f", {img} and the results block of {doc}"
    print(f"Wrote {written} ({wall:.0f} s)")
