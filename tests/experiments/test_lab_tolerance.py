"""The security lab refuses, before anything runs, a malicious share that voids a defence's promise (more
attackers in an expected round than the rule covers), unless ``lab.beyond_tolerance`` names the defence;
it checks a natural partition's cohort with the population it loads; and ``--attacks`` / ``--defences``
chosen on the command line are checked like the config's own."""

from __future__ import annotations

import copy

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hamrah.aggregation import build_aggregator
from hamrah.core.errors import ConfigError
from hamrah.experiments.lab import lab_from_dict, prepare_lab
from hamrah.experiments.lab_config import check

BASE = {  # 200 clients, K = 10 per round
    "data": {"dataset": "mnist", "partition": "iid", "num_clients": 200},
    "model": {"name": "2nn"},
    "algorithm": {"name": "fedavg", "client_fraction": 0.05, "local_epochs": 1, "batch_size": 10, "lr": 0.1},
    "run": {"rounds": 1, "seed": 0},
}


def _lab(defences: dict[str, dict], fraction: float, attacks=("sign_flip",), **lab) -> dict:
    raw = copy.deepcopy(BASE)
    raw["lab"] = {"attacks": list(attacks), "defences": list(defences), "malicious_fraction": fraction, **lab}
    raw["defences"] = {k: v for k, v in defences.items() if v}
    return raw


@pytest.mark.parametrize(
    "defences,fraction,covers",
    [
        ({"krum": {"f": 2}}, 0.3, 2),  # 3 expected of 10, Krum told f = 2 (it accepts K = 10 > 2f + 2)
        ({"multi_krum": {"f": 1, "m": 3}}, 0.2, 1),
        ({"bulyan": {"f": 1}}, 0.2, 1),  # the shipped configs' Bulyan, without beyond_tolerance
        ({"trimmed_mean": {}}, 0.2, 1),  # default beta = 0.1 trims 1 of 10 per side, 2 expected
        ({"trimmed_mean": {"beta": 0.2}}, 0.3, 2),
        ({"median": {}}, 0.5, 4),  # 5 of 10: no honest majority
        ({"geomed": {}}, 0.6, 4),
    ],
)
def test_a_share_beyond_a_defences_tolerance_is_refused_with_the_numbers(defences, fraction, covers):
    name = next(iter(defences))
    with pytest.raises(ConfigError) as e:
        lab_from_dict(_lab(defences, fraction))
    msg = str(e.value)
    assert f"defence '{name}'" in msg and f"malicious_fraction = {fraction}" in msg
    assert "of 10 clients" in msg and f"covers at most {covers}" in msg and "lab.beyond_tolerance" in msg
    assert "\n" not in msg


@pytest.mark.parametrize(
    "defences,fraction",
    [
        ({"krum": {"f": 2}}, 0.2),  # 2 expected, f = 2
        ({"trimmed_mean": {"beta": 0.2}}, 0.2),
        ({"median": {}}, 0.4),  # 4 of 10: an honest majority
        ({"mean": {}, "norm_bound": {"bound": 1.0}, "fltrust": {}}, 0.9),  # promises that count no attacker
    ],
)
def test_a_share_within_tolerance_or_a_rule_without_a_count_is_accepted(defences, fraction):
    cfg = lab_from_dict(_lab(defences, fraction))
    assert cfg.defences == tuple(defences)


def test_beyond_tolerance_runs_a_named_defence_past_its_promise_on_purpose():
    raw = _lab({"bulyan": {"f": 1}, "krum": {"f": 2}}, 0.2, beyond_tolerance=["bulyan"])
    assert lab_from_dict(raw).beyond_tolerance == ("bulyan",)
    with pytest.raises(ConfigError, match="lab.beyond_tolerance names median, which lab.defences does not list"):
        lab_from_dict(_lab({"krum": {"f": 2}}, 0.2, beyond_tolerance=["median"]))
    with pytest.raises(ConfigError, match="expected a non-empty list of names"):
        lab_from_dict(_lab({"krum": {"f": 2}}, 0.2, beyond_tolerance="krum"))
    # a lab without any attack voids no promise
    assert lab_from_dict(_lab({"median": {}}, 0.6, attacks=("none",))).attacks == ("none",)


def test_defences_and_attacks_chosen_on_the_command_line_are_checked_like_the_configs():
    cfg = lab_from_dict(_lab({"krum": {"f": 2}}, 0.3, beyond_tolerance=["krum"]))
    with pytest.raises(ConfigError, match="defence 'trimmed_mean'.*covers at most 1"):
        cfg.select(defences=["trimmed_mean"])  # registered, not listed: default beta = 0.1 covers 1 of 3
    with pytest.raises(ConfigError, match="--defences names krum twice; expected each name once"):
        cfg.select(defences=["krum", "krum"])
    with pytest.raises(ConfigError, match="--attacks names sign_flip twice"):
        cfg.select(attacks=["sign_flip", "sign_flip"])
    assert cfg.select(defences=["mean", "krum"]).defences == ("mean", "krum")


def test_a_natural_partition_is_checked_with_the_population_it_loads():
    """``num_clients = 0`` (every natural client) has no population before the data is loaded: the cohort
    checks wait for it instead of assuming one client (which refused Krum for "1 clients per round")."""
    raw = _lab({"krum": {"f": 1}}, 0.2)
    raw["data"] = {"dataset": "femnist", "partition": "natural", "num_clients": 0}
    raw["model"] = {"name": "cnn"}
    raw["algorithm"]["client_fraction"] = 0.1
    cfg = lab_from_dict(raw)
    assert cfg.population() is None
    check(cfg, population=50)  # K = 5 > 2f + 2, 10 of 50 malicious: 1 expected per round
    with pytest.raises(ConfigError, match="defence 'krum'.*1.2 attackers in an expected round of 6 clients"):
        check(cfg, population=60)
    with pytest.raises(ConfigError, match="defence 'krum' with 3 clients per round cannot work"):
        check(cfg, population=30)


@settings(max_examples=150, deadline=None)
@given(
    st.integers(1, 300),
    st.sampled_from([0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0]),
    st.floats(0.0, 0.99),
    st.sampled_from(["median", "trimmed_mean", "krum", "bulyan"]),
)
def test_the_lab_accepts_a_share_exactly_when_an_expected_round_is_within_tolerance(population, c, fraction, name):
    raw = copy.deepcopy(BASE)
    raw["data"]["num_clients"] = population
    raw["algorithm"]["client_fraction"] = c
    params = {"median": {}, "trimmed_mean": {"beta": 0.2}, "krum": {"f": 1}, "bulyan": {"f": 1}}[name]
    raw["lab"] = {"attacks": ["sign_flip"], "defences": [name], "malicious_fraction": fraction}
    raw["defences"] = {name: params} if params else {}
    k = max(int(c * population + 1e-9), 1)
    malicious = round(fraction * population)
    agg = build_aggregator(name, **params)
    try:
        agg.check(k)
        fits = True
    except ConfigError:
        fits = False
    ok = fits and malicious > 0 and malicious / population * k <= agg.tolerance(k) + 1e-9
    try:
        lab_from_dict(raw)
        accepted = True
    except ConfigError:
        accepted = False
    assert accepted == ok


def test_a_label_attack_sized_for_other_classes_is_refused_when_the_data_is_loaded():
    """FEMNIST has 62 classes: the untargeted flip's default num_classes = 10 turned labels 10..61 into
    negative ones, and the lab ran on."""
    raw = _lab({"mean": {}}, 0.2, attacks=("label_flip",))
    raw["data"] = {"dataset": "femnist", "partition": "natural", "num_clients": 5}
    raw["model"] = {"name": "cnn"}
    raw["algorithm"]["client_fraction"] = 1.0
    with pytest.raises(ConfigError, match=r"attack 'label_flip': num_classes = 10, but femnist has 62 classes"):
        prepare_lab(lab_from_dict(raw))
    raw["attacks"] = {"label_flip": {"num_classes": 62}}
    assert prepare_lab(lab_from_dict(raw)).data.dataset.num_classes == 62
