"""The rules a pipeline's stages must obey, checked when a chain is built or a run is configured: an order
that breaks DP's clip-before-noise, two codecs or secure sums, a stage a secure sum hides, and statistics
a chain cannot carry soundly (:func:`check_statistics`). Each refusal names the stages and the reason."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from hamrah.core.aggregate import Statistic
from hamrah.core.errors import ConfigError

if TYPE_CHECKING:
    from hamrah.core.pipeline.stage import Stage


def check_chain(stages: Sequence[Stage]) -> None:
    """Refuse an impossible order of stages with the reason.

    Raises:
        ConfigError: names the stages and the rule they break.
    """
    names = [s.name for s in stages]
    if len(set(names)) != len(names):
        raise ConfigError(f"pipeline stage names {names}: expected distinct names (state is kept per name)")
    traits = [s.traits for s in stages]
    clips = [i for i, t in enumerate(traits) if t.kind == "clip"]
    noises = [i for i, t in enumerate(traits) if t.adds_noise_where is not None]
    if clips and noises and max(clips) > min(noises):
        raise ConfigError(
            f"pipeline: clipping ({names[max(clips)]}) must come before noise ({names[min(noises)]}); "
            "noise is calibrated to the clipped sensitivity"
        )
    codecs = [i for i, t in enumerate(traits) if t.kind == "codec"]
    if len(codecs) > 1:
        raise ConfigError(
            f"pipeline: two codecs ({names[codecs[0]]}, {names[codecs[1]]}): only the last client "
            "stage's payload is sent, so the first's compression would be lost; use one codec"
        )
    viewers = [names[i] for i, t in enumerate(traits) if t.needs_per_client_view]
    if len(viewers) > 1:
        raise ConfigError(f"pipeline: {viewers} each replace the mean of per-client updates; expected at most one")
    sums = [i for i, t in enumerate(traits) if t.kind == "secure_sum"]
    if len(sums) > 1:
        raise ConfigError(
            f"pipeline: two secure aggregation stages ({names[sums[0]]}, {names[sums[1]]}); "
            "expected at most one (the second would mask an already masked sum)"
        )
    if sums:
        _check_secure_sum(stages, sums[0])


def _check_secure_sum(stages: Sequence[Stage], s: int) -> None:
    sec = stages[s].name
    for i, st in enumerate(stages):
        t = st.traits
        if t.needs_per_client_view:
            raise ConfigError(
                f"pipeline: {st.name} needs each client's update, but {sec} shows the server only "
                "the sum; drop one of them"
            )
        if i < s and t.kind == "codec" and not t.summable_in_ring:
            raise ConfigError(
                f"pipeline: {st.name} cannot be summed under secure aggregation ({sec}): its payload "
                "is not integers on positions and a scale shared by all clients (e.g. per-client "
                "top-k indices or per-client scales); use a quantizer with a shared range"
            )
        if i < s and t.adds_noise_where == "aggregate":
            raise ConfigError(
                f"pipeline: central noise {st.name} comes before {sec}, where the server sees only "
                "the sum; add the noise on the clients (distributed noise) or put it after "
                f"{sec} (added after unmasking)"
            )
        if i > s and t.client_side:
            raise ConfigError(
                f"pipeline: {st.name} changes client updates but comes after {sec}, which has "
                "already masked them; move it before the secure aggregation stage"
            )


def check_statistics(stages: Sequence[Stage], statistics: Sequence[Statistic], robust: bool = False) -> None:
    """Refuse, with the reason, a pipeline that cannot carry an algorithm's statistics soundly.

    The rules follow from the statistics' declarations and the stages' traits, never from names:

    - a statistic declared ``bounded = False`` (a count such as FedNova's ||a_i||_1) cannot pass a clip
      or DP noise (the clip norm that calibrates the noise does not bound it, and clipping it with the
      update would rescale the server step) nor a stage that clips coordinates to a shared range
      (a secure sum, a ring quantizer): its sum would be clipped;
    - a robust aggregator (``robust = True``) needs each client's update, so it cannot follow a secure
      sum (the server sees only the sum), and it cannot feed central noise, which is calibrated to the
      sensitivity of the mean (a robust rule such as Krum can move by a whole clipped update).

    Raises:
        ConfigError: names the statistic or aggregator, the stage and the reason.
    """
    for st in stages:
        t = st.traits
        private = t.kind == "clip" or t.adds_noise_where is not None
        ranged = t.kind == "secure_sum" or (t.kind == "codec" and t.summable_in_ring)
        for s in statistics:
            if s.bounded or not (private or ranged):
                continue
            why = (
                "its sensitivity is not bounded by the clip norm the noise is calibrated to, and clipping it "
                "with the update would rescale the server step"
                if private
                else "the stage clips every coordinate to a shared range, which would clip its sum"
            )
            raise ConfigError(
                f"pipeline stage {st.name} cannot carry statistic {s.name!r} (a count that grows with "
                f"local work, declared bounded=False): {why}; expected a pipeline without DP, secure "
                "sums or ring quantizers for this algorithm"
            )
        if robust and t.kind == "secure_sum":
            raise ConfigError(
                f"a robust aggregator with pipeline stage {st.name}: the server sees only the sum of the "
                "updates, and a robust rule needs each client's update; expected one of the two"
            )
        if robust and t.adds_noise_where == "aggregate":
            raise ConfigError(
                f"a robust aggregator with central noise ({st.name}): the noise is calibrated to the "
                "sensitivity of the mean of clipped updates, and a robust rule can move by a whole "
                "update; expected the weighted mean with central DP (or local DP with the rule)"
            )


__all__ = ["check_chain", "check_statistics"]
