"""The experiment config: TOML sections ``[data]``, ``[model]``, ``[algorithm]``, ``[run]`` (and
``[sweep]``), each a frozen dataclass. Unknown keys, wrong types and impossible values are refused
with a :class:`~hamrah.core.errors.ConfigError` naming the key and what was expected.

This module assembles and validates the config; the file is read (and what no config can hold refused) by
:mod:`hamrah.experiments.config_read`, the sections' dataclasses live in
:mod:`hamrah.experiments.config_sections` and what a run builds from them (the algorithm's keys, the
heterogeneity, the update pipeline) in :mod:`hamrah.experiments.config_resolve`. The last two are importable
from here.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hamrah.algorithms import ALGORITHMS
from hamrah.core.config_read import check_plain, read_toml, shown
from hamrah.core.errors import ConfigError
from hamrah.experiments.config_resolve import algorithm_hyperparameters, heterogeneity, pipeline_spec
from hamrah.experiments.config_sections import (
    DATASETS,
    MODELS,
    PARTITIONS,
    AlgorithmConfig,
    CompressionConfig,
    DataConfig,
    HeterogeneityConfig,
    HomomorphicEncryptionConfig,
    ModelConfig,
    PersonalizationConfig,
    PrivacyConfig,
    RunConfig,
    SecureAggregationConfig,
    SweepConfig,
    TaskConfig,
)
from hamrah.observe.tracking import TrackingConfig
from hamrah.simulation.config import BACKENDS


@dataclass(frozen=True)
class ExperimentConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    task: TaskConfig | None = None  # absent: the built-in task [model] name
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    run: RunConfig = field(default_factory=RunConfig)
    heterogeneity: HeterogeneityConfig = field(default_factory=HeterogeneityConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    compression: CompressionConfig | None = None  # absent: updates travel as float32
    privacy: PrivacyConfig | None = None  # absent: no differential privacy
    secure_aggregation: SecureAggregationConfig | None = None  # absent: the server sees each update
    homomorphic_encryption: HomomorphicEncryptionConfig | None = None  # absent: updates are not encrypted
    personalization: PersonalizationConfig | None = None  # absent: one global model for everyone
    tracking: TrackingConfig | None = None  # absent: no TensorBoard / MLflow sinks (hamrah.observe.tracking)

    def to_dict(self) -> dict:
        """Return the resolved config as plain data (``batch_size = None`` written as "inf"; absent
        optional sections left out)."""
        d = {k: v for k, v in dataclasses.asdict(self).items() if v is not None}
        if d["algorithm"]["batch_size"] is None:
            d["algorithm"]["batch_size"] = "inf"
        for key in ("batched", "workers"):
            if d["run"][key] is None:
                d["run"][key] = "auto"
        if "task" in d:
            d["task"] = {k: v for k, v in d["task"].items() if v is not None}
        return d

    def replace(self, section: str, **changes: Any) -> ExperimentConfig:
        """Return a copy with keys of one section changed (validated like the file)."""
        raw = self.to_dict()
        raw.setdefault(section, {}).update(changes)
        return from_dict(raw)


_SECTIONS = {f.name: f.type for f in dataclasses.fields(ExperimentConfig)}
_OPTIONAL = {
    "task": TaskConfig,
    "compression": CompressionConfig,
    "privacy": PrivacyConfig,
    "secure_aggregation": SecureAggregationConfig,
    "homomorphic_encryption": HomomorphicEncryptionConfig,
    "personalization": PersonalizationConfig,
    "tracking": TrackingConfig,
}
MAX_CLIENTS = 10_000_000  # a simulated population larger than this cannot be held in memory
_CHOICES = {
    ("data", "dataset"): DATASETS,
    ("data", "partition"): PARTITIONS,
    ("model", "name"): MODELS,
    ("run", "backend"): BACKENDS,
    ("task", "name"): MODELS,
    ("algorithm", "name"): ALGORITHMS,
    ("compression", "codec"): ("none", "quantize", "sign", "topk", "mask", "float16", "bfloat16"),
    ("privacy", "mode"): ("central", "ftrl", "local", "distributed", "dpsgd"),
    ("privacy", "sampling"): ("poisson", "fixed"),
    ("privacy", "accountant"): ("rdp", "pld"),
    ("secure_aggregation", "variant"): ("secagg", "secagg+"),
    ("homomorphic_encryption", "scheme"): ("paillier", "ckks"),
    ("personalization", "method"): ("ditto", "fedper", "finetune"),
}


def load_config(path: str | Path) -> ExperimentConfig:
    """Read and validate a TOML experiment config.

    Raises:
        ConfigError: the file is missing, not TOML, or holds a wrong key, type or value.
    """
    raw = read_toml(path)
    refuse_empty(raw, path)
    try:
        return from_dict(raw, Path(path).parent)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def refuse_empty(raw: dict, path: str | Path) -> None:
    """Refuse a config file with no section: a truncated or failed copy would otherwise run the defaults."""
    if not raw:
        raise ConfigError(f"{path}: empty; expected at least a [data] or [task] section")


def from_dict(raw: dict, base: str | Path | None = None) -> ExperimentConfig:
    """Validate plain data (as parsed from TOML) into an :class:`ExperimentConfig`.

    Args:
        raw: the parsed TOML.
        base: the config file's folder: a relative ``data.path`` is resolved from it (as the server's
            paths are), not from the working directory. None: left as written.
    """
    if not isinstance(raw, dict):
        raise ConfigError("expected a table of sections")
    check_plain(raw)
    _reject_unknown(raw, list(_SECTIONS), "section")
    hints = typing.get_type_hints(ExperimentConfig)
    sections = {}
    for name, table in raw.items():
        if not isinstance(table, dict):
            raise ConfigError(f"[{name}] must be a table of keys, got {type(table).__name__}")
        sections[name] = _section(name, _OPTIONAL.get(name, hints[name]), table)
    cfg = ExperimentConfig(**sections)
    cfg = _task_section(cfg, raw.get("model"), base)
    _check_values(cfg)
    if base is not None and cfg.data.path is not None and not Path(cfg.data.path).is_absolute():
        cfg = cfg.replace("data", path=str((Path(base) / cfg.data.path).resolve()))
    return cfg


def _task_section(cfg: ExperimentConfig, model_table: dict | None, base: str | Path | None) -> ExperimentConfig:
    """Check ``[task]``: an entry or a name (not both); a name is the built-in ``[model] name``; a relative
    ``path`` (default: the config file's folder) is resolved from the config file's folder."""
    t = cfg.task
    if t is None:
        return cfg
    if (t.entry is None) == (t.name is None):
        raise ConfigError("[task]: expected exactly one of entry = 'module:attribute' or name = '<built-in>'")
    if t.name is not None:
        if t.kwargs:
            raise ConfigError("task.kwargs: a built-in task takes no keyword arguments")
        if model_table and model_table.get("name", t.name) != t.name:
            raise ConfigError(f"task.name = {t.name!r} and model.name = {model_table['name']!r}: expected one name")
        return dataclasses.replace(cfg, model=ModelConfig(t.name))
    if t.path is not None and not t.path.strip():
        raise ConfigError(f"task.path = {t.path!r}: expected a folder (leave it out for the config file's)")
    folder = Path(t.path) if t.path is not None else None
    if base is not None and (folder is None or not folder.is_absolute()):
        folder = Path(base) / (folder or ".")
    return dataclasses.replace(cfg, task=dataclasses.replace(t, path=None if folder is None else str(folder.resolve())))


def _section(name: str, cls: type, table: dict) -> Any:
    hints = typing.get_type_hints(cls)
    _reject_unknown(table, list(hints), f"key in [{name}]")
    values = {}
    for key, value in table.items():
        if (name, key) == ("algorithm", "batch_size") and value in ("inf", "Inf", "INF"):
            value = None
        if (name, key) in (("run", "batched"), ("run", "workers")) and value == "auto":
            value = None
        values[key] = _coerce(f"{name}.{key}", value, hints[key])
        choices = _CHOICES.get((name, key))
        if choices and values[key] not in choices:
            raise ConfigError(f"{name}.{key} = {shown(value)}: expected one of {', '.join(choices)}")
    return cls(**values)


def _coerce(key: str, value: Any, hint: Any) -> Any:
    args = typing.get_args(hint)
    optional = type(None) in args
    base = (
        next((a for a in args if a is not type(None)), hint) if args and typing.get_origin(hint) is not list else hint
    )
    if value is None and optional:
        return None
    expected = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
    if base is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key} = {shown(value)}: expected a table, e.g. {{hidden = 16}}")
        return dict(value)
    if typing.get_origin(base) is list and typing.get_args(base) == (int,):
        if (
            not isinstance(value, list)
            or len(value) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        ):
            raise ConfigError(f"{key} = {shown(value)}: expected [lo, hi], two integers")
        return list(value)
    if typing.get_origin(base) is list and typing.get_args(base) == (str,):
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise ConfigError(f'{key} = {shown(value)}: expected a list of names, e.g. ["fc3"]')
        return list(value)
    if typing.get_origin(base) is list:
        if not isinstance(value, list) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in value
        ):
            raise ConfigError(f"{key} = {shown(value)}: expected a list of numbers")
        return [float(v) for v in value]
    if key == "algorithm.batch_size" and not (isinstance(value, int) and not isinstance(value, bool)):
        raise ConfigError(
            f'{key} = {shown(value)}: expected an integer >= 1 or the string "inf" (the whole local data set)'
        )
    if base is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, base) or (base is int and isinstance(value, bool)):
        raise ConfigError(
            f"{key} = {shown(value)}: expected {expected.get(base, base.__name__)}, got {type(value).__name__}"
        )
    return value


def _reject_unknown(table: dict, allowed: list[str], what: str) -> None:
    for key in table:
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"unknown {what} {key!r}{hint}; expected one of {', '.join(allowed)}")


def _check_values(cfg: ExperimentConfig) -> None:
    a, r, d, s = cfg.algorithm, cfg.run, cfg.data, cfg.sweep
    checks = [
        (0.0 <= a.client_fraction <= 1.0, "algorithm.client_fraction", a.client_fraction, "0 <= C <= 1"),
        (1 <= a.local_epochs <= 10_000, "algorithm.local_epochs", a.local_epochs, "an integer in 1..10000"),
        (a.batch_size is None or a.batch_size >= 1, "algorithm.batch_size", a.batch_size, 'an integer >= 1 or "inf"'),
        (a.lr > 0 and math.isfinite(a.lr), "algorithm.lr", a.lr, "a positive number"),
        (1 <= r.rounds <= 10_000_000, "run.rounds", r.rounds, "an integer in 1..10000000"),
        (r.eval_every >= 1, "run.eval_every", r.eval_every, "an integer >= 1"),
        (r.checkpoint_every >= 1, "run.checkpoint_every", r.checkpoint_every, "an integer >= 1"),
        (
            r.target_accuracy is None or 0 < r.target_accuracy <= 1,
            "run.target_accuracy",
            r.target_accuracy,
            "a fraction in (0, 1]",
        ),
        (r.seed >= 0, "run.seed", r.seed, "an integer >= 0"),
        (r.workers is None or r.workers >= 1, "run.workers", r.workers, "an integer >= 1"),
        (
            d.num_clients is None or (0 if d.partition == "natural" else 1) <= d.num_clients <= MAX_CLIENTS,
            "data.num_clients",
            d.num_clients,
            f"an integer in 1..{MAX_CLIENTS}",
        ),
        (d.shards_per_client >= 1, "data.shards_per_client", d.shards_per_client, "an integer >= 1"),
        (d.path is None or d.path.strip(), "data.path", d.path, "a folder or file (leave it out for the default)"),
        (math.isfinite(d.alpha) and d.alpha > 0, "data.alpha", d.alpha, "a positive finite number"),
        (0 <= d.sigma <= 10, "data.sigma", d.sigma, "a number in [0, 10] (the log-normal spread of client sizes)"),
        (0 < s.lr_min <= s.lr_max < math.inf, "sweep.lr_min", s.lr_min, "0 < lr_min <= lr_max, both finite"),
        (s.per_decade >= 1, "sweep.per_decade", s.per_decade, "an integer >= 1"),
        (s.widen >= 0, "sweep.widen", s.widen, "an integer >= 0"),
        (
            cfg.personalization is None or 0 < cfg.personalization.holdout < 1,
            "personalization.holdout",
            cfg.personalization and cfg.personalization.holdout,
            "a share in (0, 1)",
        ),
        (
            s.lrs is None or (len(s.lrs) > 0 and all(0 < v < math.inf for v in s.lrs)),
            "sweep.lrs",
            s.lrs,
            "a non-empty list of positive finite rates",
        ),
    ]
    for ok, key, value, expected in checks:
        if not ok:
            raise ConfigError(f"{key} = {shown(value)}: expected {expected}")
    if cfg.privacy is not None:  # its own checks first: DP-SGD's settings reach the algorithm
        from hamrah.pipeline import dp_config

        dp_config(cfg.privacy.to_dp())
    _check_algorithm(cfg)
    if d.num_clients:
        pipeline_spec(cfg, d.num_clients)
    if d.partition == "natural" and d.dataset in ("mnist", "cifar10") and not user_task(cfg):
        raise ConfigError(
            f"data.partition = 'natural': {d.dataset.upper()} has no natural clients; "
            "use iid, shards, dirichlet or unbalanced"
        )
    if d.partition != "natural" and d.num_clients in (None, 0):
        raise ConfigError(f"data.num_clients must be set (>= 1) for partition {d.partition!r}")


def user_task(cfg: ExperimentConfig) -> bool:
    """Return True when the config names a user's task (``[task] entry``): its data comes from the task."""
    return cfg.task is not None and cfg.task.entry is not None


def _check_algorithm(cfg: ExperimentConfig) -> None:
    """Build the algorithm and the heterogeneity once, so bad values are refused before a run."""
    from hamrah.algorithms import build

    build(cfg.algorithm.name, cfg.algorithm.client_fraction, **algorithm_hyperparameters(cfg))
    heterogeneity(cfg.heterogeneity)
