"""The security lab: configs that cannot work are refused before anything runs; a tiny matrix runs end to end."""

from __future__ import annotations

import argparse
import copy
import json

import pytest

from hamrah.core.errors import ConfigError
from hamrah.experiments.lab import (
    BEGIN,
    END,
    lab_from_dict,
    load_lab_config,
    main,
    markdown_tables,
    run_lab,
    summarize,
    write_doc,
)

TINY = {
    "data": {"dataset": "mnist", "partition": "iid", "num_clients": 200},
    "model": {"name": "2nn"},
    "algorithm": {"name": "fedavg", "client_fraction": 0.025, "local_epochs": 1, "batch_size": 10, "lr": 0.1},
    "run": {"rounds": 2, "seed": 0},
    "lab": {"attacks": ["none", "sign_flip", "backdoor"], "defences": ["mean", "krum"], "malicious_fraction": 0.2},
    "attacks": {"backdoor": {"target": 0}},
    "defences": {"krum": {"f": 1}},
}


def _with(**changes):
    raw = copy.deepcopy(TINY)
    for path, value in changes.items():
        section, key = path.split("__")
        raw.setdefault(section, {})[key] = value
    for section in ("attacks", "defences"):  # keep only the parameter tables of listed names
        raw[section] = {k: v for k, v in raw[section].items() if v is not None and k in raw["lab"][section]}
    return raw


@pytest.mark.parametrize(
    "changes,message",
    [
        (
            {"defences__krum": {"f": 2}},
            "defence 'krum' with 5 clients per round cannot work: .*Krum with f = 2 .* needs at least 7",
        ),
        ({"lab__defences": ["bulyan"], "defences__krum": None}, None),
        (
            {
                "lab__defences": ["trimmed_mean"],
                "defences__trimmed_mean": {"beta": 0.5},
                "defences__krum": None,
                "algorithm__client_fraction": 0.02,
            },
            "trims every one of 4 clients",
        ),
        (
            {"lab__defences": ["norm_bound"], "defences__norm_bound": {"bound": -1.0}, "defences__krum": None},
            r"bound = -1.0: expected a number in \(0, inf\)",
        ),
        ({"lab__malicious_fraction": 0.001}, "makes no malicious client"),
        ({"lab__malicious_fraction": 1.0}, r"expected a number in \[0, 1\)"),
        ({"lab__attacks": ["none", "teleport"]}, "unknown attack 'teleport'"),
        ({"attacks__sign_flip": {"factor": 2}}, "unknown parameter 'factor'"),
        (
            {"attacks__gaussian": {"std": 1.0}},
            r"\[attacks.gaussian\] sets parameters of 'gaussian', which lab.attacks does not list",
        ),
        ({"lab__speed": 3}, "unknown key in \\[lab\\] 'speed'"),
        ({"run__rounds": 0}, "run.rounds = 0"),
    ],
)
def test_a_lab_that_cannot_work_is_refused_with_the_reason(changes, message):
    raw = _with(**changes)
    if "attacks__gaussian" in changes:
        raw["attacks"]["gaussian"] = {"std": 1.0}
    if message is None:  # Bulyan with f = 1 needs K >= 7 of 5 and its f is missing: both refused
        with pytest.raises(ConfigError, match="bulyan"):
            lab_from_dict(raw)
        return
    with pytest.raises(ConfigError, match=message):
        lab_from_dict(raw)


def test_shipped_configs(tmp_path):
    cfg = load_lab_config("configs/lab_mnist.toml")
    assert cfg.cohort() == 10 and len(cfg.attacks) * len(cfg.defences) >= 70
    with pytest.raises(ConfigError, match="needs at least 13"):
        load_lab_config("configs/lab_bad_krum.toml")
    with pytest.raises(ConfigError, match="not in lab.attacks"):
        cfg.select(attacks=["poison_ivy"])
    adaptive = load_lab_config("configs/lab_adaptive.toml")
    assert adaptive.run_seeds() == (0, 1, 2) and {"min_max", "fang_krum", "fltrust_adaptive", "dba"} <= set(
        adaptive.attacks
    )
    assert adaptive.select(seeds=[4]).run_seeds() == (4,)


def test_write_doc_replaces_only_the_block(tmp_path):
    doc = tmp_path / "security.md"
    doc.write_text(f"# Title\n\nprose\n\n{BEGIN}\nold\n{END}\n\nmore prose\n")
    write_doc(doc, "new table")
    assert doc.read_text() == f"# Title\n\nprose\n\n{BEGIN}\nnew table\n{END}\n\nmore prose\n"


def test_tiny_lab_end_to_end(tmp_path, capsys):
    cfg = lab_from_dict(_with(lab__attacks=["sign_flip", "backdoor"], lab__defences=["krum"])).select(rounds=1)
    rows = run_lab(cfg, log=lambda m: None)
    assert [(r["attack"], r["defence"]) for r in rows] == [("sign_flip", "krum"), ("backdoor", "krum")]
    assert all(0.0 <= r["main_accuracy"] <= 1.0 for r in rows)
    assert rows[0]["attack_success"] is None and 0.0 <= rows[1]["attack_success"] <= 1.0
    # the clean model (trained without attack, same defence and seed) scores the backdoor's inputs too
    assert rows[0]["clean_success"] is None and 0.0 <= rows[1]["clean_success"] <= 1.0
    assert rows[1]["malicious_clients"] == 40

    cfg_path = tmp_path / "lab.toml"
    cfg_path.write_text(_toml(_with(lab__attacks=["none"], lab__defences=["median"])))
    doc = tmp_path / "docs" / "security.md"
    doc.parent.mkdir()
    doc.write_text(f"# kept\n{BEGIN}\nold\n{END}\n")
    args = argparse.Namespace(
        config=str(cfg_path),
        rounds=1,
        attacks=None,
        defences=None,
        check=False,
        out=str(tmp_path / "out"),
        doc=str(doc),
        img=str(tmp_path / "docs" / "img" / "h.png"),
    )
    main(args)  # no --update-doc: the doc is left alone, the results go to --out
    assert doc.read_text() == f"# kept\n{BEGIN}\nold\n{END}\n" and not (tmp_path / "docs" / "img").exists()
    assert "| none | " in (tmp_path / "out" / "results.md").read_text()
    assert (tmp_path / "out" / "heatmap.png").stat().st_size > 1000
    assert json.loads((tmp_path / "out" / "lab.json").read_text())["rows"][0]["defence"] == "median"

    main(argparse.Namespace(**vars(args), update_doc=True))
    text = doc.read_text()
    assert BEGIN in text and "hamrah lab" in text and "--rounds 1" in text and "](img/h.png)" in text
    assert "| none | " in text and (tmp_path / "docs" / "img" / "h.png").stat().st_size > 1000


def test_seeds_give_one_row_per_seed_and_a_mean_with_spread():
    cfg = lab_from_dict(_with(lab__attacks=["backdoor"], lab__defences=["median"], lab__seeds=[0, 1]))
    rows = run_lab(cfg.select(rounds=1), log=lambda m: None)
    assert [r["seed"] for r in rows] == [0, 1]
    assert rows[0]["main_accuracy"] != rows[1]["main_accuracy"]  # another partition, init and attackers
    (s,) = summarize(rows)
    assert (
        s["seeds"] == 2 and abs(s["main_accuracy"] - (rows[0]["main_accuracy"] + rows[1]["main_accuracy"]) / 2) < 1e-12
    )
    assert s["main_accuracy_sd"] > 0 and s["clean_success"] is not None
    assert " ± " in markdown_tables([s])
    with pytest.raises(ConfigError, match=r"lab.seeds = \[-1\]: expected a non-empty list of integers >= 0"):
        lab_from_dict(_with(lab__seeds=[-1]))


def _toml(raw: dict) -> str:
    def value(v):
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return str(v).lower() if isinstance(v, bool) else str(v)

    lines = []
    for section, table in raw.items():
        if section in ("attacks", "defences"):
            for name, params in table.items():
                lines.append(f"[{section}.{name}]")
                lines += [f"{k} = {value(v)}" for k, v in params.items()]
        else:
            lines.append(f"[{section}]")
            lines += [f"{k} = {value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


def test_the_lab_trains_the_experiment_as_configured_heterogeneity_included():
    # The lab's experiment is a whole config: its [heterogeneity] drop-out reaches the cells (it was
    # ignored), and Krum's rounds with too few reports are counted in the row.
    raw = _with(lab__attacks=["sign_flip"], lab__defences=["krum"], lab__malicious_fraction=0.1)
    raw["heterogeneity"] = {"dropout": 0.6}
    rows = run_lab(lab_from_dict(raw).select(rounds=2), log=lambda m: None)
    assert rows[0]["rounds_skipped"] >= 1
    del raw["heterogeneity"]
    assert run_lab(lab_from_dict(raw).select(rounds=2), log=lambda m: None)[0]["rounds_skipped"] == 0
