"""What one client's decoded contribution can be, per stage: the sensitivity central DP relies on.

Central DP-FedAvg (McMahan et al. 2018) calibrates its noise to the clip norm C: every client's
contribution *as the server adds it* must have L2 norm <= C (and, with adaptive clipping, a shifted
bit in [-1/2, 1/2]; Andrew et al. 2021). Lossy stages between the client's clip and the sum can break
that: a stochastic quantizer rounds a coordinate up by up to one step, QSGD rescales by the norm, sign
compression sends ||x||_1 / d per coordinate, error feedback adds last round's residual. Two cases:

- **the server decodes each client** (no secure sum): :meth:`hamrah.privacy.DPClip.bound_decoded`
  clips the decoded update again to C, whatever the codec. Every codec is then accepted.
- **a secure sum** (SecAgg, Paillier) shows the server only the total, so the client must bound its
  own contribution: every stage after the clip has a *deterministic* per-coordinate rounding bound e
  (:func:`coordinate_error`), and the client clips to C - (sum of e) * sqrt(d). A stage without such
  a bound (CKKS, whose decryption error is approximate) is refused with central DP.
"""

from __future__ import annotations

from collections.abc import Sequence

from hamrah.compression import StochasticQuantizer
from hamrah.core.errors import ConfigError
from hamrah.core.pipeline import Stage
from hamrah.he.stage import HomomorphicSum
from hamrah.secagg.stage import SecureAggregation


def coordinate_error(stage: Stage) -> float | None:
    """Return the most ``stage`` moves one coordinate of a client's input as the sum sees it, or None.

    Args:
        stage: a stage placed between the clip and a secure sum (or the secure sum itself).

    Returns:
        The shared-range quantizer's step 2r / (2^b - 1) (stochastic rounding moves a value to one of
        its two neighbouring levels; clamping to [-r, r] only shrinks it); SecAgg's fixed-point error
        clip / (2^b - 1) (round to nearest on a grid of step 2 clip / (2^b - 1)); Paillier's
        2^-(precision_bits + 1); None when no deterministic bound exists (CKKS, anything else).
    """
    if isinstance(stage, StochasticQuantizer) and stage.scheme == "ring" and stage.clip is not None:
        return 2 * float(stage.clip) / stage.levels
    if isinstance(stage, SecureAggregation):
        return float(stage.clip) / (2.0**stage.input_bits - 1)
    if isinstance(stage, HomomorphicSum) and stage.settings.scheme == "paillier":
        return float(2.0 ** -(stage.settings.precision_bits + 1))
    return None


def decode_error(stages: Sequence[Stage]) -> float:
    """Return the summed per-coordinate bound of the client-side stages that run under a secure sum.

    Args:
        stages: the stages between the clip and the sum, the secure-sum stage included.

    Raises:
        ConfigError: a stage has no deterministic bound, so the contribution could exceed the clip.
    """
    total = 0.0
    for st in stages:
        e = coordinate_error(st)
        if e is None:
            raise ConfigError(
                f'privacy.mode = "central" with {st.name} before the secure sum: its rounding has no '
                "deterministic bound, so a client's summed contribution could exceed the clip norm "
                "the noise is calibrated to; expected SecAgg, Paillier, or a quantizer with "
                'scheme = "ring"'
            )
        total += e
    return total


__all__ = ["coordinate_error", "decode_error"]
