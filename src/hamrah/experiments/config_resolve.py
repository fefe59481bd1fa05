"""What a run builds from a validated config: the ``[algorithm]`` keys passed to the algorithm, the simulator's
heterogeneity for ``[heterogeneity]``, and the client-update pipeline of ``[compression]``, ``[privacy]``,
``[secure_aggregation]`` and ``[homomorphic_encryption]``.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from hamrah.core.errors import ConfigError
from hamrah.experiments.config_sections import HeterogeneityConfig

if TYPE_CHECKING:
    from hamrah.experiments.config import ExperimentConfig

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


def algorithm_hyperparameters(cfg: ExperimentConfig) -> dict:
    """Return the keys to pass to :func:`hamrah.algorithms.build`: the base ``[algorithm]`` keys the
    algorithm takes, every extra that is set (so one it does not take is refused by name), and with
    ``privacy.mode = "dpsgd"`` DP-SGD's local settings (clip, noise multiplier, Poisson batches)."""
    from hamrah.algorithms import hyperparameters

    a, p = cfg.algorithm, cfg.privacy
    keys = hyperparameters(a.name)
    base = {k: getattr(a, k) for k in ("local_epochs", "batch_size", "lr") if k in keys}
    hp = {**base, **{k: getattr(a, k) for k in _EXTRAS if getattr(a, k) is not None}}
    if p is not None and p.mode == "dpsgd":
        hp.update(dp_clip=p.clip, dp_noise_multiplier=p.noise_multiplier, dp_poisson=p.sampling == "poisson")
    own = cfg.personalization
    if own is not None and own.method != "finetune":  # trained every round: the client half changes
        hp["personal"] = own.method
        hp.update({k: v for k, v in (("personal_lambda", own.lam), ("personal_layers", own.layers)) if v is not None})
    elif own is not None and (own.lam is not None or own.layers is not None):
        raise ConfigError(
            "personalization.lam and layers are Ditto's and FedPer's; expected them unset with method = \"finetune\""
        )
    return hp


def example_ledger(cfg: ExperimentConfig):
    """Return the per-client example-level ledger of a DP-SGD run (``privacy.mode = "dpsgd"``), else None."""
    p = cfg.privacy
    if p is None or p.mode != "dpsgd":
        return None
    from hamrah.privacy.examples import ExampleLedger  # dp_accounting: only for a DP-SGD run

    return ExampleLedger(p.delta, p.target_epsilon, p.accountant)


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
