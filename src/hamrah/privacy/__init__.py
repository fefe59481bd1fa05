"""Differential privacy: clipping, Gaussian noise, adaptive clipping, DP-SGD, accounting, the budget.

- Central user-level DP-FedAvg (McMahan et al. 2018): :func:`clip_update`, :func:`dp_fedavg_aggregate`.
- Adaptive clipping (Andrew et al. 2021): :class:`AdaptiveClipper`.
- Local DP: :func:`local_dp_release`, accounted with :meth:`RoundSpec.unsampled`.
- On-device DP-SGD (Abadi et al. 2016): :func:`train_local_dpsgd`, :class:`DPSGDPlan`.
- Accounting with dp-accounting (RDP, PLD): :class:`PrivacyAccountant`, :class:`RoundSpec`.
- DP-FTRL without sampling (Kairouz et al. 2021): :class:`TreeAggregationNoise`, ``RoundSpec.tree``.
- The budget: :class:`BudgetLedger`.
- Pipeline stages (:mod:`hamrah.core.pipeline`): :class:`DPClip`, :class:`CentralGaussianNoise`,
  :class:`LocalGaussian`, :func:`dp_stages`.
- A run's whole pipeline (codec + DP stages) from plain settings: :class:`PipelineSpec`,
  :func:`resolve_pipeline`; a driver's state across rounds: :class:`PipelineRun`.

See ``docs/dp.md``.
"""

from hamrah.privacy.accounting import PrivacyAccountant, RoundSpec, epsilon_of, noise_multiplier_for, round_spec_for
from hamrah.privacy.chains import CODECS, PipelineRun, PipelineSpec, codec_stage, dp_config, resolve_pipeline
from hamrah.privacy.adaptive import (
    AdaptiveClipper,
    AdaptiveClipState,
    geometric_clip_update,
    noised_unclipped_fraction,
    unclipped_bit,
    update_noise_multiplier,
)
from hamrah.privacy.config import AdaptiveClipConfig, DPConfig
from hamrah.privacy.dpsgd import DPSGDPlan, clip_per_example, noisy_mean_gradient, per_example_grads, train_local_dpsgd
from hamrah.privacy.ftrl import TreeAggregationNoise
from hamrah.privacy.ledger import BudgetLedger
from hamrah.privacy.mechanisms import (
    add_gaussian_noise,
    central_noise_std,
    clip_update,
    dp_fedavg_aggregate,
    estimator_denominator,
    gaussian_noise_like,
    l2_norm,
    local_dp_release,
)
from hamrah.privacy.stages import CentralGaussianNoise, DPClip, LocalGaussian, dp_stages

__all__ = [
    "CODECS",
    "PipelineRun",
    "PipelineSpec",
    "codec_stage",
    "dp_config",
    "resolve_pipeline",
    "AdaptiveClipConfig",
    "AdaptiveClipState",
    "AdaptiveClipper",
    "BudgetLedger",
    "CentralGaussianNoise",
    "DPClip",
    "DPConfig",
    "DPSGDPlan",
    "LocalGaussian",
    "PrivacyAccountant",
    "RoundSpec",
    "TreeAggregationNoise",
    "add_gaussian_noise",
    "central_noise_std",
    "clip_per_example",
    "clip_update",
    "dp_fedavg_aggregate",
    "dp_stages",
    "epsilon_of",
    "estimator_denominator",
    "gaussian_noise_like",
    "geometric_clip_update",
    "l2_norm",
    "local_dp_release",
    "noise_multiplier_for",
    "noised_unclipped_fraction",
    "noisy_mean_gradient",
    "per_example_grads",
    "round_spec_for",
    "train_local_dpsgd",
    "unclipped_bit",
    "update_noise_multiplier",
]
