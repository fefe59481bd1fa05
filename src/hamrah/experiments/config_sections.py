"""The experiment config's sections: one frozen dataclass per TOML table (``[data]``, ``[model]``, ``[task]``,
``[algorithm]``, ``[heterogeneity]``, ``[run]``, ``[sweep]``, ``[compression]``, ``[privacy]``,
``[secure_aggregation]``, ``[homomorphic_encryption]``, ``[personalization]``) with its defaults, and the
names some keys choose from.
:mod:`hamrah.experiments.config` assembles and validates them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

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
    backend: str = "local"  # "ray": the workers are actors on a Ray cluster (RAY_ADDRESS, or a local one)
    checkpoint_every: int = 10  # with --out: a checkpoint to resume from every this many rounds and at the end


@dataclass(frozen=True)
class SweepConfig:
    lrs: list[float] | None = None  # explicit rates, or the grid below
    lr_min: float = 0.01
    lr_max: float = 1.0
    per_decade: int = 3  # the paper's grid: steps of 10^(1/3) (or 10^(1/6))
    widen: int = 0  # extra rates beyond an edge of the grid while the best rate lies at that edge
    prune: bool = False  # stop a rate where the best so far had reached the target (it cannot win)


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

    mode: str = "central"  # central (DP-FedAvg) | ftrl (DP-FTRL, no sampling assumed) | local | distributed | dpsgd
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
class PersonalizationConfig:
    """``[personalization]``: every client keeps a model of its own and is scored on its own held-out
    examples (see ``docs/personalization.md``)."""

    method: str = "ditto"  # ditto | fedper (trained each round) | finetune (the global model, trained once locally)
    lam: float | None = None  # ditto: the pull of each personal model toward the global one (0.1)
    layers: list[str] | None = None  # fedper: parameter-name prefixes that stay on each client, e.g. ["fc3"]
    holdout: float = 0.2  # share of each client's examples kept out of training to score its models


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
