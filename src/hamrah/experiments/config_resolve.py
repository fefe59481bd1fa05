"""What a run builds from a validated config: the ``[algorithm]`` keys passed to the algorithm, the simulator's
heterogeneity for ``[heterogeneity]``, and the client-update pipeline of ``[compression]``, ``[privacy]``,
``[secure_aggregation]`` and ``[homomorphic_encryption]``.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from hamrah.experiments.config_sections import AlgorithmConfig, HeterogeneityConfig

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


def algorithm_hyperparameters(a: AlgorithmConfig) -> dict:
    """Return the ``[algorithm]`` keys to pass to :func:`hamrah.algorithms.build`: the base keys the
    algorithm takes, and every extra that is set (so one it does not take is refused by name)."""
    from hamrah.algorithms import hyperparameters

    keys = hyperparameters(a.name)
    base = {k: getattr(a, k) for k in ("local_epochs", "batch_size", "lr") if k in keys}
    return {**base, **{k: getattr(a, k) for k in _EXTRAS if getattr(a, k) is not None}}


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
