"""Differential privacy: clipping, Gaussian noise, adaptive clipping, DP-FTRL, accounting, the budget.

A leaf beside ``hamrah.compression``, ``hamrah.secagg`` and ``hamrah.he``: it imports nothing of them.

- Central user-level DP-FedAvg (McMahan et al. 2018): :func:`clip_update`, :func:`dp_fedavg_aggregate`.
- Adaptive clipping (Andrew et al. 2021): :class:`AdaptiveClipper`.
- Local DP: :func:`local_dp_release`, accounted with :meth:`RoundSpec.unsampled`.
- Accounting with dp-accounting (RDP, PLD): :class:`PrivacyAccountant`, :class:`RoundSpec`.
- DP-FTRL without sampling (Kairouz et al. 2021): :class:`TreeAggregationNoise`, ``RoundSpec.tree``.
- The budget: :class:`BudgetLedger`; each client's example-level spend under DP-SGD: :class:`ExampleLedger`.
- Pipeline stages (:mod:`hamrah.core.pipeline`): :class:`DPClip`, :class:`CentralGaussianNoise`,
  :class:`LocalGaussian`, :func:`dp_stages`.

A run's whole pipeline (codec, DP, secure sums) is assembled in :mod:`hamrah.pipeline`; distributed DP
(noise summed under SecAgg) lives there too, and on-device DP-SGD in :mod:`hamrah.algorithms.dpsgd`.
Names are imported on first use (PEP 562), so ``import hamrah.privacy.config`` does not pull in
dp_accounting. See ``docs/dp.md``.
"""

from __future__ import annotations

import importlib
from typing import Any

_NAMES = {
    "accounting": ("PrivacyAccountant", "RoundSpec", "epsilon_of", "noise_multiplier_for", "round_spec_for"),
    "adaptive": (
        "AdaptiveClipper",
        "AdaptiveClipState",
        "geometric_clip_update",
        "noised_unclipped_fraction",
        "unclipped_bit",
        "update_noise_multiplier",
    ),
    "config": ("AdaptiveClipConfig", "DPConfig"),
    "examples": ("ExampleLedger",),
    "ftrl": ("TreeAggregationNoise",),
    "ledger": ("BudgetLedger",),
    "mechanisms": (
        "add_gaussian_noise",
        "central_noise_std",
        "clip_update",
        "dp_fedavg_aggregate",
        "estimator_denominator",
        "gaussian_noise_like",
        "l2_norm",
        "local_dp_release",
    ),
    "stages": ("CentralGaussianNoise", "DPClip", "LocalGaussian", "dp_stages"),
}
_WHERE = {name: module for module, names in _NAMES.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    """Import the submodule that defines ``name`` on first use."""
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'hamrah.privacy' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"hamrah.privacy.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
