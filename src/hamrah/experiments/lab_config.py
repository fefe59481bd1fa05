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
