"""The security lab: every attack against every defence on one federated task, as two tables and a heatmap.

A lab config is an experiment config (``[data]``, ``[model]``, ``[algorithm]``, ``[run]``) plus::

    [lab]
    attacks = ["none", "sign_flip", "backdoor"]      # names of hamrah.attacks.build_attack
    defences = ["mean", "median", "krum"]            # names of hamrah.aggregation.build_aggregator
    malicious_fraction = 0.2                         # share of the population the attacker controls
    seeds = [0, 1, 2]                                # optional: one run per seed (default: run.seed)
    beyond_tolerance = ["bulyan"]                    # optional: defences run past their promise on purpose
    [attacks.backdoor]                               # parameters of one attack
    target = 0
    [defences.krum]                                  # parameters of one defence
    f = 4

Every aggregator is checked against the cohort size and every attack built (and its trigger fitted
to the images) before the first round, so a config that cannot work stops with the reason; so does a
malicious share that puts more attackers in an expected round than a defence's promise covers
(``tolerance(K)``), unless ``beyond_tolerance`` names that defence.

Each seed changes the partition, the model initialisation, the malicious clients and the sampling.
Under every defence and seed the lab also trains without attack, and scores each targeted attack's
inputs on that clean model: the rate a model reaches without any attacker (the baseline the attack
success is read against). Results go to the ``--out`` folder; ``--update-doc`` also rewrites the
results block of ``docs/security.md``.

The config is read and checked by :mod:`hamrah.experiments.lab_config`, the tables and heatmap are made by
:mod:`hamrah.experiments.lab_report`; this module runs the cells and writes the results.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from hamrah.attacks import TARGETED, Attack, attack_success_rate, main_accuracy
from hamrah.core.errors import ConfigError
from hamrah.experiments.lab_config import (
    LabConfig,
    build_defence,
    build_lab_attack,
    check,
    lab_from_dict,
    load_lab_config,
)
from hamrah.experiments.lab_report import (
    BEGIN,
    END,
    markdown_tables,
    plot_heatmap,
    summarize,
    write_doc,
)
from hamrah.experiments.runner import Prepared, prepare
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


def prepare_lab(cfg: LabConfig) -> Prepared:
    """Load and split the data, build the model; check every backdoor trigger fits the images and
    every root-set defence (FLTrust) can draw its root set and score the algorithm's updates; check the
    defences against the cohort of the loaded population (a natural partition's is known only now)."""
    prep = prepare(cfg.experiment)
    check(cfg, prep.data.num_clients)
    for name in cfg.defences:
        agg = build_defence(cfg, name)
        if needs_reference(agg):
            try:
                RootReference(prep.model_factory(), prep.data, prep.algorithm, agg.root_size, np.random.default_rng(0))
            except ConfigError as e:
                raise ConfigError(f"defence {name!r} cannot work: {e}") from None
    test = prep.data.dataset.test
    classes = prep.data.dataset.num_classes
    for name in cfg.attacks:
        poison = build_lab_attack(cfg, name, prep.data.num_clients).data_poisoning
        if poison is not None and getattr(poison, "num_classes", classes) != classes:  # labels out of range
            raise ConfigError(
                f"attack {name!r}: num_classes = {poison.num_classes}, but {prep.data.dataset.name} has {classes} "
                f"classes; expected num_classes = {classes} in [attacks.{name}]"
            )
        if hasattr(poison, "stamp"):  # a pixel trigger (backdoor, model replacement, DBA)
            if test.x.dim() < 3:
                raise ConfigError(
                    f"attack {name!r}: a pixel trigger needs image data, {prep.data.dataset.name} has none"
                )
            poison.stamp(test.x[:1])
    return prep


def _train(cfg: LabConfig, prep: Prepared, attack: Attack, defence_name: str):
    """Train the lab's experiment (its heterogeneity, pipeline and task included) under one attack and defence."""
    sim = prep.simulator(
        eval_every=cfg.experiment.run.rounds, aggregator=build_defence(cfg, defence_name), attack=attack
    )
    params = sim.run().params
    return sim.model, params, sim.skipped_rounds


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
        malicious_clients, rounds_skipped (too few reports for the defence's rule), wall_s, and
        ``_model`` / ``_params`` (the trained model, not for JSON).
    """
    attack = build_lab_attack(cfg, attack_name, prep.data.num_clients)
    start = time.perf_counter()
    model, params, skipped = _train(cfg, prep, attack, defence_name)
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
        "rounds_skipped": skipped,  # too few reports for the defence (drop-out): the model kept
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
                skipped = row["rounds_skipped"]
                log(
                    f"  seed {seed} {a:>18s} x {d:<13s} accuracy {row['main_accuracy']:.4f}  attack success {asr}"
                    f"  ({row['wall_s']} s)" + (f"  {skipped} rounds skipped: too few for {d}" if skipped else "")
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
        f"{cfg.cohort(prep.data.num_clients)} per round (C = {a.client_fraction}), E = {a.local_epochs}, "
        f"B = {a.batch_size or 'inf'}, "
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
