"""The experiment config: TOML sections ``[data]``, ``[model]``, ``[algorithm]``, ``[run]`` (and
``[sweep]``), each a frozen dataclass. Unknown keys, wrong types and impossible values are refused
with a :class:`~hamrah.core.errors.ConfigError` naming the key and what was expected.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hamrah.algorithms import ALGORITHMS
from hamrah.core.errors import ConfigError
from hamrah.observe.tracking import TrackingConfig

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DATASETS = (
    "mnist",
    "shakespeare",
    "femnist",
    "cifar10",
    "synthetic_0_0",
    "synthetic_0.5_0.5",
    "synthetic_1_1",
    "synthetic_iid",
)
PARTITIONS = ("iid", "shards", "dirichlet", "natural", "unbalanced")
MODELS = ("2nn", "cnn", "char_lstm", "logreg")


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "mnist"
    partition: str = "iid"
    num_clients: int | None = 100  # natural: None or 0 = every natural client
    shards_per_client: int = 2
    alpha: float = 0.5  # dirichlet concentration
    sigma: float = 1.0  # unbalanced: log-normal spread of client sizes
    path: str | None = None  # explicit data folder or file


@dataclass(frozen=True)
class ModelConfig:
    name: str = "2nn"


@dataclass(frozen=True)
class TaskConfig:
    """``[task]``: the user's task by import path, or a built-in by name (see ``docs/tasks.md``)."""

    entry: str | None = None  # "module:attribute": a Task subclass, instance, or a function returning one
    kwargs: dict | None = None  # keyword arguments for the class or function
    name: str | None = None  # a built-in task: one of MODELS (the same as [model] name)
    path: str | None = None  # the folder entry's module is imported from (default: the config file's)


@dataclass(frozen=True)
class AlgorithmConfig:
    name: str = "fedavg"
    client_fraction: float = 0.1
    local_epochs: int = 1
    batch_size: int | None = 10  # None = "inf": the whole local data set
    lr: float = 0.1
    # Unset (None) keys take the algorithm's default; a key the algorithm does not use is refused.
    momentum: float | None = None  # local heavy-ball momentum
    local_steps: int | None = None  # run this many local steps instead of epochs
    mu: float | None = None  # fedprox, fednova: proximal weight
    server_lr: float | None = None  # scaffold, fedadam/yogi/adagrad/avgm
    beta1: float | None = None  # fedadam/yogi/adagrad: first moment; fedavgm: server momentum
    beta2: float | None = None  # fedadam/yogi
    tau: float | None = None  # fedadam/yogi/adagrad: adaptivity
    local_optimizer: str | None = None  # the local solver: "sgd" (default), "adam" or "adamw"
    local_betas: list[float] | None = None  # adam/adamw moment decays (beta1/beta2 are the server optimizer's)
    weight_decay: float | None = None  # adam: L2 term; adamw: decoupled decay


@dataclass(frozen=True)
class HeterogeneityConfig:
    epochs: list[int] | None = None  # [lo, hi]: local epochs per client, uniform
    steps: list[int] | None = None  # [lo, hi]: local steps per client, uniform (instead of epochs)
    straggler_fraction: float = 0.0  # share of each cohort doing partial work (dropped unless the algorithm accepts it)
    dropout: float = 0.0  # probability a sampled client fails


@dataclass(frozen=True)
class RunConfig:
    rounds: int = 100
    target_accuracy: float | None = None
    eval_every: int = 1
    seed: int = 0
    stop_at_target: bool = False
    batched: bool | None = None  # "auto" (None): batched for ReLU MLPs, where it measured fastest
    workers: int | None = None  # "auto" (None): processes training clients side by side
    checkpoint_every: int = 10  # with --out: a checkpoint to resume from every this many rounds and at the end


@dataclass(frozen=True)
class SweepConfig:
    lrs: list[float] | None = None  # explicit rates, or the grid below
    lr_min: float = 0.01
    lr_max: float = 1.0
    per_decade: int = 3  # the paper's grid: steps of 10^(1/3) (or 10^(1/6))


@dataclass(frozen=True)
class CompressionConfig:
    """``[compression]``: the codec every client update goes through (see ``docs/compression.md``)."""

    codec: str = "none"  # none | quantize | sign | topk | mask | float16 | bfloat16
    bits: int | None = None  # quantize: 2, 4 or 8
    scheme: str | None = None  # quantize: minmax | qsgd | ring
    range: float | None = None  # quantize ring: the shared range [-r, r]
    bucket: int | None = None  # quantize: values sharing one scale
    fraction: float | None = None  # topk: k / d
    error_feedback: bool | None = None  # sign, topk
    value_dtype: str | None = None  # topk: float32 | float16
    p: float | None = None  # mask: kept fraction
    shared: bool | None = None  # mask: one mask for the whole round


@dataclass(frozen=True)
class PrivacyConfig:
    """``[privacy]``: differential privacy of the client updates (see ``docs/dp.md``)."""

    mode: str = "central"  # central (DP-FedAvg) | ftrl (DP-FTRL, no sampling assumed) | local
    clip: float = 1.0  # S, L2 norm of a client's update (the initial norm when adaptive)
    noise_multiplier: float | None = None  # z; unset: calibrated to target_epsilon over run.rounds
    target_epsilon: float | None = None  # the budget; a run that cannot fit is refused, training stops before it
    delta: float = 1e-5
    sampling: str = "poisson"  # poisson (each client joins with probability C) | fixed (m of K)
    accountant: str = "rdp"  # rdp | pld
    adaptive: bool = False  # adaptive clipping (Andrew et al. 2021)
    target_quantile: float = 0.5
    clip_learning_rate: float = 0.2
    clip_count_stddev: float | None = None  # None: expected cohort / 20
    tree_rounds: int | None = None  # ftrl: rounds per tree; each client at most once per tree

    def to_dp(self) -> dict:
        """Return the settings as :class:`hamrah.privacy.DPConfig` takes them (plain data)."""
        from hamrah.pipeline import dp_settings

        return dp_settings(dataclasses.asdict(self))


@dataclass(frozen=True)
class SecureAggregationConfig:
    """``[secure_aggregation]``: the server sees only the sum of the updates (see ``docs/secagg.md``)."""

    variant: str = "secagg"  # secagg (Bonawitz et al. 2017) | secagg+ (Bell et al. 2020)
    clip: float = 1.0  # coordinates clipped to [-clip, clip] before fixed-point quantization
    input_bits: int = 16
    ring_bits: int | None = None  # privacy.mode = "distributed": the ring Z_2^ring_bits of the noisy sum (20)
    min_contributors: int | None = None  # distributed: fewest clients whose noise is in a released sum (m / 2)
    malicious_server: bool = False  # the actively secure variant: signed keys + consistency check (needs device keys)


@dataclass(frozen=True)
class HomomorphicEncryptionConfig:
    """``[homomorphic_encryption]``: clients encrypt, the server adds ciphertexts, a key holder decrypts the
    sum (see ``docs/he.md``). Unset keys take the scheme's defaults; a key the scheme does not use is refused."""

    scheme: str = "paillier"  # paillier (packed, exact) | ckks (batched, approximate)
    key_bits: int | None = None  # paillier: modulus bits (2048)
    precision_bits: int | None = None  # paillier: fixed-point fraction bits (24)
    poly_modulus_degree: int | None = None  # ckks: ring degree N (8192)
    scale_bits: int | None = None  # ckks: scale 2^scale_bits (the largest that leaves room for the sum, <= 40)
    bound: float | None = None  # each encrypted coordinate clipped to [-bound, bound] (1.0)
    max_weight: int | None = None  # headroom: total weight of a sum (2m + 16 clients with DP, else 2^20 examples)


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
    "tracking": TrackingConfig,
}
_CHOICES = {
    ("data", "dataset"): DATASETS,
    ("data", "partition"): PARTITIONS,
    ("model", "name"): MODELS,
    ("task", "name"): MODELS,
    ("algorithm", "name"): ALGORITHMS,
    ("compression", "codec"): ("none", "quantize", "sign", "topk", "mask", "float16", "bfloat16"),
    ("privacy", "mode"): ("central", "ftrl", "local", "distributed"),
    ("privacy", "sampling"): ("poisson", "fixed"),
    ("privacy", "accountant"): ("rdp", "pld"),
    ("secure_aggregation", "variant"): ("secagg", "secagg+"),
    ("homomorphic_encryption", "scheme"): ("paillier", "ckks"),
}


def read_toml(path: str | Path) -> dict:
    """Return a TOML file's tables.

    Raises:
        ConfigError: the file is missing, unreadable or not valid TOML, naming the file.
    """
    path = Path(path)
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read config ({e})") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML ({e})") from None


def load_config(path: str | Path) -> ExperimentConfig:
    """Read and validate a TOML experiment config.

    Raises:
        ConfigError: the file is missing, not TOML, or holds a wrong key, type or value.
    """
    raw = read_toml(path)
    try:
        return from_dict(raw, Path(path).parent)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def from_dict(raw: dict, base: str | Path | None = None) -> ExperimentConfig:
    """Validate plain data (as parsed from TOML) into an :class:`ExperimentConfig`.

    Args:
        raw: the parsed TOML.
        base: the config file's folder: a relative ``data.path`` is resolved from it (as the server's
            paths are), not from the working directory. None: left as written.
    """
    if not isinstance(raw, dict):
        raise ConfigError("expected a table of sections")
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
            raise ConfigError(f"{name}.{key} = {value!r}: expected one of {', '.join(choices)}")
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
            raise ConfigError(f"{key} = {value!r}: expected a table, e.g. {{hidden = 16}}")
        return dict(value)
    if typing.get_origin(base) is list and typing.get_args(base) == (int,):
        if (
            not isinstance(value, list)
            or len(value) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        ):
            raise ConfigError(f"{key} = {value!r}: expected [lo, hi], two integers")
        return list(value)
    if typing.get_origin(base) is list:
        if not isinstance(value, list) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in value
        ):
            raise ConfigError(f"{key} = {value!r}: expected a list of numbers")
        return [float(v) for v in value]
    if key == "algorithm.batch_size" and not (isinstance(value, int) and not isinstance(value, bool)):
        raise ConfigError(f'{key} = {value!r}: expected an integer >= 1 or "inf" (the whole local data set)')
    if base is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, base) or (base is int and isinstance(value, bool)):
        raise ConfigError(
            f"{key} = {value!r}: expected {expected.get(base, base.__name__)}, got {type(value).__name__}"
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
        (a.local_epochs >= 1, "algorithm.local_epochs", a.local_epochs, "an integer >= 1"),
        (a.batch_size is None or a.batch_size >= 1, "algorithm.batch_size", a.batch_size, 'an integer >= 1 or "inf"'),
        (a.lr > 0 and math.isfinite(a.lr), "algorithm.lr", a.lr, "a positive number"),
        (r.rounds >= 1, "run.rounds", r.rounds, "an integer >= 1"),
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
            d.num_clients is None or d.num_clients >= (0 if d.partition == "natural" else 1),
            "data.num_clients",
            d.num_clients,
            "an integer >= 1",
        ),
        (d.shards_per_client >= 1, "data.shards_per_client", d.shards_per_client, "an integer >= 1"),
        (d.alpha > 0, "data.alpha", d.alpha, "a positive number"),
        (d.sigma >= 0, "data.sigma", d.sigma, "a number >= 0"),
        (0 < s.lr_min <= s.lr_max, "sweep.lr_min", s.lr_min, "0 < lr_min <= lr_max"),
        (s.per_decade >= 1, "sweep.per_decade", s.per_decade, "an integer >= 1"),
        (
            s.lrs is None or (len(s.lrs) > 0 and all(v > 0 for v in s.lrs)),
            "sweep.lrs",
            s.lrs,
            "a non-empty list of positive rates",
        ),
    ]
    for ok, key, value, expected in checks:
        if not ok:
            raise ConfigError(f"{key} = {value!r}: expected {expected}")
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


_EXTRAS = (
    "momentum",
    "local_steps",
    "mu",
    "server_lr",
    "beta1",
    "beta2",
    "tau",
    "local_optimizer",
    "local_betas",
    "weight_decay",
)


def algorithm_hyperparameters(a: AlgorithmConfig) -> dict:
    """Return the ``[algorithm]`` keys to pass to :func:`hamrah.algorithms.build`: the base keys the
    algorithm takes, and every extra that is set (so one it does not take is refused by name)."""
    from hamrah.algorithms import hyperparameters

    keys = hyperparameters(a.name)
    base = {k: getattr(a, k) for k in ("local_epochs", "batch_size", "lr") if k in keys}
    return {**base, **{k: getattr(a, k) for k in _EXTRAS if getattr(a, k) is not None}}


def _check_algorithm(cfg: ExperimentConfig) -> None:
    """Build the algorithm and the heterogeneity once, so bad values are refused before a run."""
    from hamrah.algorithms import build

    build(cfg.algorithm.name, cfg.algorithm.client_fraction, **algorithm_hyperparameters(cfg.algorithm))
    heterogeneity(cfg.heterogeneity)


def heterogeneity(h: HeterogeneityConfig):
    """Return the simulator's Heterogeneity for ``[heterogeneity]``, or None when every client is alike."""
    from hamrah.simulation.heterogeneity import Heterogeneity

    if h == HeterogeneityConfig():
        return None
    return Heterogeneity(
        tuple(h.epochs) if h.epochs else None, tuple(h.steps) if h.steps else None, h.straggler_fraction, h.dropout
    )


def pipeline_spec(cfg: ExperimentConfig, population: int):
    """Return the run's client-update pipeline (:class:`hamrah.pipeline.PipelineSpec`) or None.

    The chain is built (an impossible order is refused with the reason), the noise multiplier resolved
    (calibrated to ``privacy.target_epsilon`` over ``run.rounds`` when not given), and a budget that
    ``run.rounds`` rounds cannot fit is refused, naming the largest number of rounds that fits.

    Raises:
        ConfigError: naming the key or the reason.
    """
    from hamrah.algorithms.base import cohort_size
    from hamrah.pipeline import resolve_pipeline

    comp = (
        None
        if cfg.compression is None
        else {k: v for k, v in dataclasses.asdict(cfg.compression).items() if v is not None}
    )
    priv = None if cfg.privacy is None else cfg.privacy.to_dp()
    sec = None if cfg.secure_aggregation is None else dataclasses.asdict(cfg.secure_aggregation)
    he = None if cfg.homomorphic_encryption is None else dataclasses.asdict(cfg.homomorphic_encryption)
    spec = resolve_pipeline(
        comp, priv, population, cohort_size(cfg.algorithm.client_fraction, population), cfg.run.rounds, sec, he
    )
    dp = spec.dp if spec is not None else None
    if dp is not None and dp.target_epsilon is not None:
        from hamrah.privacy.ledger import BudgetLedger  # dp_accounting: only for a run with a DP budget

        BudgetLedger(dp.target_epsilon, dp.delta, spec.round_spec(), dp.accountant).refuse_start(cfg.run.rounds)
    return spec
