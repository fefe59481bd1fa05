"""Configuration of differential privacy: one frozen, validated value per run.

Modes (see ``docs/dp.md``):

- ``central``: user-level DP-FedAvg (McMahan et al. 2018, *Learning Differentially Private Recurrent
  Language Models*): clip each client's update, Gaussian noise on the aggregate at the server.
- ``local``: clip and Gaussian noise on the device (the server is not trusted).
- ``distributed``: distributed DP with secure aggregation (Kairouz, Liu, Steinke 2021): each client adds
  discrete Gaussian noise in the ring before SecAgg masks it (:mod:`hamrah.pipeline.distributed`).
- ``ftrl``: user-level DP-FTRL (Kairouz et al. 2021, *Practical and Private (Deep) Learning without
  Sampling or Shuffling*): clip each client's update, tree-aggregated Gaussian noise on the running sum
  at the server; needs no sampling assumption, only that each client contributes at most once per tree
  of ``tree_rounds`` rounds (which the driver enforces).
- ``dpsgd``: example-level DP-SGD on the device (Abadi et al. 2016, *Deep Learning with Differential
  Privacy*): per-example clipping and noise in every local step.
"""

from __future__ import annotations

from dataclasses import dataclass

from hamrah.core.errors import ConfigError
from hamrah.core.numbers import is_number

MODES = ("central", "local", "dpsgd", "ftrl", "distributed")
SAMPLINGS = ("poisson", "fixed")
ACCOUNTANTS = ("rdp", "pld")


def _check(ok: bool, key: str, value: object, expected: str) -> None:
    if not ok:
        raise ConfigError(f"privacy.{key} = {value!r}: expected {expected}")


@dataclass(frozen=True)
class AdaptiveClipConfig:
    """Adaptive clipping of Andrew et al. 2021 (*Differentially Private Learning with Adaptive Clipping*).

    Attributes:
        target_quantile: gamma, the fraction of updates that should end up unclipped (paper: 0.5).
        learning_rate: eta_C of the geometric update C <- C * exp(-eta_C (b - gamma)) (paper: 0.2).
        clip_count_stddev: sigma_b, std of the noise on the unclipped count; None = expected cohort / 20,
            the paper's default.
    """

    target_quantile: float = 0.5
    learning_rate: float = 0.2
    clip_count_stddev: float | None = None

    def __post_init__(self) -> None:
        q, lr, sb = self.target_quantile, self.learning_rate, self.clip_count_stddev
        _check(is_number(q) and 0.0 < q < 1.0, "adaptive.target_quantile", q, "a number in (0, 1)")
        _check(is_number(lr) and lr > 0, "adaptive.learning_rate", lr, "a positive finite number")
        _check(
            sb is None or (is_number(sb) and sb > 0),
            "adaptive.clip_count_stddev",
            sb,
            "a positive finite number or None (= expected cohort / 20)",
        )

    def count_stddev(self, expected_cohort: float) -> float:
        """Return sigma_b for a round with ``expected_cohort`` clients."""
        return self.clip_count_stddev if self.clip_count_stddev is not None else expected_cohort / 20.0


@dataclass(frozen=True)
class DPConfig:
    """Differential privacy settings of a run.

    Attributes:
        mode: "central" | "local" | "dpsgd".
        clip: S, the L2 clip norm (of a client's whole update; per example for dpsgd; the initial
            norm when ``adaptive`` is set).
        noise_multiplier: z (noise std = z * S on a sum); None = calibrate from ``target_epsilon``.
        target_epsilon: the budget epsilon at ``delta``; None = no budget (then ``noise_multiplier`` is needed).
        delta: the delta of the (epsilon, delta) guarantee, 0 < delta < 1.
        sampling: "poisson" (each client joins with probability q) or "fixed" (m of K without replacement);
            for dpsgd, how a client's examples form batches: Poisson lots of expected size B, or the
            shuffled disjoint batches of an epoch.
        accountant: "rdp" or "pld" (both from Google's dp-accounting).
        adaptive: adaptive clipping parameters (central mode only), or None for a fixed clip norm.
        tree_rounds: k, rounds per tree of DP-FTRL (mode "ftrl" only): the tree restarts every k rounds
            and each client contributes at most once per tree.

    Raises:
        ConfigError: a value is out of range, of the wrong type, or the combination is unsupported.
    """

    mode: str = "central"
    clip: float = 1.0
    noise_multiplier: float | None = None
    target_epsilon: float | None = None
    delta: float = 1e-5
    sampling: str = "poisson"
    accountant: str = "rdp"
    adaptive: AdaptiveClipConfig | None = None
    tree_rounds: int | None = None

    def __post_init__(self) -> None:
        _check(self.mode in MODES, "mode", self.mode, " | ".join(MODES))
        _check(self.sampling in SAMPLINGS, "sampling", self.sampling, " | ".join(SAMPLINGS))
        _check(self.accountant in ACCOUNTANTS, "accountant", self.accountant, " | ".join(ACCOUNTANTS))
        _check(is_number(self.clip) and self.clip > 0, "clip", self.clip, "a positive finite number")
        z, eps = self.noise_multiplier, self.target_epsilon
        _check(z is None or (is_number(z) and 0 <= z <= 1e6), "noise_multiplier", z, "a number in [0, 1e6] or None")
        _check(eps is None or (is_number(eps) and eps > 0), "target_epsilon", eps, "a positive finite number or None")
        _check(
            z is not None or eps is not None,
            "noise_multiplier",
            z,
            "a value when privacy.target_epsilon is not set (one of the two is needed)",
        )
        _check(is_number(self.delta) and 0.0 < self.delta < 1.0, "delta", self.delta, "a number in (0, 1)")
        _check(
            self.mode != "dpsgd" or z is not None,
            "noise_multiplier",
            z,
            'a value with privacy.mode = "dpsgd" (the noise of every local step; target_epsilon caps '
            "what each client may spend)",
        )
        _check(
            self.adaptive is None or isinstance(self.adaptive, AdaptiveClipConfig),
            "adaptive",
            self.adaptive,
            "an AdaptiveClipConfig or None",
        )
        if self.adaptive is not None and self.mode != "central":
            raise ConfigError(
                f"privacy.adaptive is set with privacy.mode = {self.mode!r}: adaptive clipping needs "
                'privacy.mode = "central" (Andrew et al. 2021 clip adaptively at the server)'
            )
        k = self.tree_rounds
        _check(
            (k is None) == (self.mode != "ftrl")
            and (k is None or (isinstance(k, int) and not isinstance(k, bool) and k >= 1)),
            "tree_rounds",
            k,
            'an integer >= 1 with privacy.mode = "ftrl" (rounds per tree; each client at most '
            "once per tree), and unset otherwise",
        )
        _check(
            self.mode != "ftrl" or self.accountant == "rdp",
            "accountant",
            self.accountant,
            '"rdp" with privacy.mode = "ftrl" (dp-accounting accounts tree aggregation with RDP only)',
        )
        if self.accountant == "pld" and self.sampling == "fixed" and self.mode == "central":
            raise ConfigError(
                'privacy.accountant = "pld" with privacy.sampling = "fixed": dp-accounting\'s PLD accountant '
                'does not support sampling without replacement; expected accountant = "rdp" or sampling = "poisson"'
            )
