"""The security lab's config: an experiment config plus the ``[lab]`` table (attacks, defences, malicious
share, seeds) and the ``[attacks.<name>]`` / ``[defences.<name>]`` parameter tables, validated (every defence
checked against the cohort, every attack built) before anything runs; and the attacks and defences built from it.
The format is described in :mod:`hamrah.experiments.lab`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from hamrah.aggregation import AGGREGATORS, build_aggregator
from hamrah.algorithms.base import cohort_size
from hamrah.attacks import Attack, build_attack, choose_malicious
from hamrah.core.config_read import check_plain, dotted, shown
from hamrah.core.errors import ConfigError
from hamrah.experiments.config import ExperimentConfig, from_dict, read_toml


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
    beyond_tolerance: tuple[str, ...] = ()

    def run_seeds(self) -> tuple[int, ...]:
        """Return the seeds to run: ``seeds``, or the experiment's ``run.seed``."""
        return self.seeds or (self.experiment.run.seed,)

    def for_seed(self, seed: int) -> LabConfig:
        """Return this lab with ``run.seed`` = ``seed`` (partition, initialisation, attackers, sampling)."""
        return replace(self, experiment=self.experiment.replace("run", seed=seed), seeds=(seed,))

    def population(self) -> int | None:
        """Return the number of clients the config sets, or None (a natural partition of every client:
        known once the data is loaded)."""
        return self.experiment.data.num_clients or None

    def cohort(self, population: int | None = None) -> int:
        """Return the clients per round of ``population`` clients (default: :meth:`population`, or 1)."""
        return cohort_size(self.experiment.algorithm.client_fraction, population or self.population() or 1)

    def expected_attackers(self, population: int) -> float:
        """Return the malicious clients expected in one round's cohort: round(fraction * N) / N * K."""
        count = round(self.malicious_fraction * population)
        return count / population * self.cohort(population)

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
            twice = sorted({x for x in chosen or [] if (chosen or []).count(x) > 1})
            if twice:
                raise ConfigError(f"--{what} names {', '.join(twice)} twice; expected each name once")
        exp = self.experiment if rounds is None else self.experiment.replace("run", rounds=rounds)
        cfg = LabConfig(
            exp,
            tuple(attacks or self.attacks),
            tuple(defences or self.defences),
            self.malicious_fraction,
            self.attack_params,
            self.defence_params,
            _seeds(seeds) if seeds is not None else self.seeds,
            self.beyond_tolerance,
        )
        check(cfg)  # a defence added by name, or another round count, is checked like the config's own
        return cfg


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
        raise ConfigError(f"lab.{key} = {shown(value)}: expected a non-empty list of names")
    if len(set(value)) != len(value):
        raise ConfigError(f"lab.{key} lists a name twice: {value}")
    return tuple(value)


def _seeds(value: Any) -> tuple[int, ...]:
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value)
    ):
        raise ConfigError(f"lab.seeds = {shown(value)}: expected a non-empty list of integers >= 0")
    if len(set(value)) != len(value):
        raise ConfigError(f"lab.seeds lists a seed twice: {value}")
    return tuple(value)


def _tables(raw: Any, section: str, listed: tuple[str, ...]) -> dict[str, dict]:
    if not isinstance(raw, dict) or not all(isinstance(v, dict) for v in raw.values()):
        raise ConfigError(f"[{section}] must hold one table per name, e.g. [{section}.{listed[0]}]")
    stray = [k for k in raw if k not in listed]
    if stray:
        where = dotted((section, stray[0]))
        raise ConfigError(f"[{where}] sets parameters of {stray[0]!r}, which lab.{section} does not list")
    return {k: dict(v) for k, v in raw.items()}


def lab_from_dict(raw: dict, base: str | Path | None = None) -> LabConfig:
    """Validate plain data (as parsed from TOML) into a :class:`LabConfig`; nothing is loaded yet."""
    check_plain(raw)
    raw = dict(raw)
    lab = raw.pop("lab", None)
    if not isinstance(lab, dict):
        raise ConfigError("a lab config needs a [lab] table with attacks, defences and malicious_fraction")
    keys = ("attacks", "defences", "malicious_fraction", "seeds", "beyond_tolerance")
    unknown = [k for k in lab if k not in keys]
    if unknown:
        raise ConfigError(f"unknown key in [lab] {unknown[0]!r}; expected {', '.join(keys)}")
    attacks, defences = _names(lab, "attacks"), _names(lab, "defences")
    fraction = lab.get("malicious_fraction", 0.2)
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 <= fraction < 1:
        raise ConfigError(f"lab.malicious_fraction = {shown(fraction)}: expected a number in [0, 1)")
    attack_params = _tables(raw.pop("attacks", {}), "attacks", attacks)
    defence_params = _tables(raw.pop("defences", {}), "defences", defences)
    seeds = _seeds(lab["seeds"]) if "seeds" in lab else ()
    beyond = _names(lab, "beyond_tolerance") if "beyond_tolerance" in lab else ()
    stray = [x for x in beyond if x not in defences]
    if stray:
        raise ConfigError(
            f"lab.beyond_tolerance names {', '.join(dotted((x,)) for x in stray)}, which lab.defences does not list"
        )
    cfg = LabConfig(
        from_dict(raw, base), attacks, defences, float(fraction), attack_params, defence_params, seeds, beyond
    )
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


def check(cfg: LabConfig, population: int | None = None) -> None:
    """Refuse, with the reason, a lab whose defences or attacks cannot work for its cohort.

    Args:
        cfg: the lab.
        population: the number of clients once the data is loaded; None: the config's
            ``data.num_clients``. A natural partition of every client (``num_clients = 0``) has none
            before its data is loaded: then only the names and parameters are checked here, and
            :func:`hamrah.experiments.lab.prepare_lab` checks the cohort with the loaded population.

    Raises:
        ConfigError: an aggregator refuses the cohort (Krum with K <= 2f + 2, Bulyan with
            K < 4f + 3, a trimmed mean that trims everything, ...); the malicious share puts more
            attackers in an expected round than a defence's promise covers (Krum or Bulyan with
            fraction * K > f, a trimmed mean with fraction * K > floor(beta K), a median or geometric
            median with fraction >= 1/2), unless ``lab.beyond_tolerance`` names that defence; an
            attack or defence has an unknown name or a bad parameter; an attack needs malicious
            clients and gets none.
    """
    population = population or cfg.population()
    defences = [(name, build_defence(cfg, name)) for name in cfg.defences]
    for name in cfg.attacks:
        atk = build_lab_attack(cfg, name, population or 1)
        if population and name != "none" and not atk.malicious:
            raise ConfigError(
                f"attack {name!r}: lab.malicious_fraction = {cfg.malicious_fraction} of "
                f"{population} clients makes no malicious client"
            )
    if not population:
        return
    k = cfg.cohort(population)
    for name, agg in defences:
        try:
            agg.check(k)
        except ConfigError as e:
            raise ConfigError(f"defence {name!r} with {k} clients per round cannot work: {e}") from None
    if all(a == "none" for a in cfg.attacks):
        return
    expected = cfg.expected_attackers(population)
    for name, agg in defences:
        tolerated = agg.tolerance(k)
        if tolerated is not None and expected > tolerated + 1e-9 and name not in cfg.beyond_tolerance:
            raise ConfigError(
                f"defence {name!r}: lab.malicious_fraction = {cfg.malicious_fraction} puts {expected:g} "
                f"attackers in an expected round of {k} clients, and its promise covers at most {tolerated}; "
                f"expected a smaller malicious_fraction or a defence set for more attackers, or name "
                f"{name!r} in lab.beyond_tolerance to run it past its promise on purpose"
            )
