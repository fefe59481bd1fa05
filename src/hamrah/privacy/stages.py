"""DP as stages of the update pipeline (:mod:`hamrah.core.pipeline`).

- Central user-level DP-FedAvg (McMahan et al. 2018): :class:`DPClip` on the client (kind "clip"),
  :class:`CentralGaussianNoise` on the aggregate (kind "noise", server only, so it may follow a secure
  sum: the noise is added where the server sees only the sum). With adaptive clipping (Andrew et al.
  2021) the clip stage also sends the bit b_i under the auxiliary key ``"<clip name>:unclipped"``; the
  noise stage pops it, noises the count with sigma_b, computes the next clip norm and hands it to the
  clip stage's server half (which broadcasts it) under ``"<clip name>:next_clip"``.
- Local DP: :class:`LocalGaussian` clips and adds noise z*S on the client (kind "noise", client noise).

The estimator is McMahan et al.'s fixed-denominator f_f with unit weights: clients must be given equal
aggregation weights (the stages refuse otherwise), the chain's mean over the m' reporting clients is
turned into sum / (expected cohort: m, or q*K for Poisson) before the noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import torch

from hamrah.core.errors import ConfigError
from hamrah.core.numbers import check_number
from hamrah.core.params import Params
from hamrah.core.pipeline import BaseStage, ClientContext, DensePayload, ServerContext, StageTraits
from hamrah.privacy.adaptive import BIT_SENSITIVITY, AdaptiveClipper, AdaptiveClipState, shifted_bit
from hamrah.privacy.config import AdaptiveClipConfig, DPConfig
from hamrah.privacy.ftrl import TreeAggregationNoise
from hamrah.privacy.mechanisms import add_gaussian_noise, clip_update, l2_norm, local_dp_release

UNCLIPPED, NEXT_CLIP = "unclipped", "next_clip"


def _torch_generator(rng: Any) -> torch.Generator:
    """Return a torch Generator seeded from the context's numpy Generator (no global state)."""
    return torch.Generator().manual_seed(int(rng.integers(2**62)))


def _is_model_key(name: str) -> bool:
    """Return True for a model tensor, False for an auxiliary ``"<stage>:<what>"`` entry."""
    return ":" not in name


def model_numel(update: Params) -> int:
    """Return the number of model coordinates in ``update`` (auxiliary entries excluded)."""
    return sum(v.numel() for k, v in update.items() if _is_model_key(k))


def _require_equal_weights(ctx: ClientContext, stage: str) -> None:
    if not math.isclose(ctx.weight * ctx.num_clients, 1.0, rel_tol=1e-6):
        raise ConfigError(
            f"{stage}: client {ctx.client_id} has aggregation weight {ctx.weight:.4g} among "
            f"{ctx.num_clients} clients; expected equal weights (DP-FedAvg's sensitivity bound "
            "assumes each client contributes at most S / m: pass weight 1 for every client)"
        )


@dataclass(frozen=True)
class DPClip(BaseStage):
    """Client half of DP-FedAvg: clip the update in L2 to S over all tensors (McMahan et al. 2018).

    With ``adaptive`` the norm is the server state broadcast to clients (Andrew et al. 2021) and the
    client adds its shifted bit b_i - 1/2 (b_i = [norm <= C]) under ``"<name>:unclipped"``.

    The accountant assumes each client's *decoded* contribution has model norm <= C and bit in
    [-1/2, 1/2]. A lossy codec after the clip can break that, so it is enforced twice:

    - where the server decodes each client's payload (no secure sum), :meth:`bound_decoded` clips the
      decoded model part to C again and clamps the bit (every codec, error feedback included);
    - under a secure sum the server sees only the total, so the client clips to C - e * sqrt(d)
      instead, where ``decode_error`` e bounds how far the later stages (a shared-range quantizer, the
      secure sum's fixed-point rounding) move any one coordinate; then ||decoded|| <= C exactly.

    Example:
        >>> DPClip(clip=0.5).traits.kind
        'clip'
    """

    clip: float = 1.0
    adaptive: bool = False
    decode_error: float = 0.0
    name: str = "dp_clip"
    traits: ClassVar[StageTraits] = StageTraits("clip")

    def __post_init__(self) -> None:
        check_number(f"{self.name}: clip", self.clip, 0.0, open_low=True)
        check_number(f"{self.name}: decode_error", self.decode_error, 0.0)

    def init_server(self, template: Params) -> AdaptiveClipState | None:
        return AdaptiveClipState(float(self.clip)) if self.adaptive else None

    def current_clip(self, server_state: Any) -> float:
        """Return C: the fixed clip, or the adaptive norm in ``server_state``."""
        return float(server_state.clip) if self.adaptive else float(self.clip)

    def margin(self, numel: int) -> float:
        """Return e * sqrt(d): the most the later stages can add to the norm of a d-coordinate update."""
        return self.decode_error * math.sqrt(numel)

    def pre_clip(self, clip: float, numel: int) -> float:
        """Return C - e sqrt(d), the norm the client clips a d-coordinate update to so its sum-side norm is <= C.

        Raises:
            ConfigError: C is not above the margin (the rounding alone could exceed it).
        """
        target = clip - self.margin(numel)
        if not target > 0:
            raise ConfigError(
                f"{self.name}: clip norm {clip:.6g} is not above {self.margin(numel):.6g}, the most the "
                f"fixed-point rounding after it can add to a {numel}-coordinate update; expected a "
                "larger clip or more input bits (secure_aggregation.input_bits, a quantizer's bits)"
            )
        return target

    def encode(self, update: Params, state: Any, ctx: ClientContext) -> tuple[DensePayload, Any]:
        _require_equal_weights(ctx, self.name)
        clip = self.current_clip(ctx.server_state)
        clipped, norm = clip_update(update, self.pre_clip(clip, model_numel(update)))
        if self.adaptive:
            clipped[f"{self.name}:{UNCLIPPED}"] = torch.tensor([shifted_bit(norm, clip)])
        return DensePayload(clipped), state

    def bound_decoded(self, update: Params, server_state: Any) -> Params:
        """Return one client's decoded update with its model part clipped to C and its bit clamped to
        [-1/2, 1/2]: the sensitivity the accountant assumes, whatever the codec did (server side)."""
        clip = self.current_clip(server_state)
        model = {k: v for k, v in update.items() if _is_model_key(k)}
        out = dict(update)
        out.update(clip_update(model, clip)[0] if l2_norm(model) > clip else model)
        bit = f"{self.name}:{UNCLIPPED}"
        if bit in out:
            out[bit] = out[bit].clamp(-BIT_SENSITIVITY, BIT_SENSITIVITY)
        return out

    def server(self, aggregate: Params, state: Any, ctx: ServerContext) -> tuple[Params, Any]:
        if not self.adaptive:
            return aggregate, state
        out = dict(aggregate)
        nxt = out.pop(f"{self.name}:{NEXT_CLIP}", None)
        if nxt is None or f"{self.name}:{UNCLIPPED}" in out:
            raise ConfigError(
                f"{self.name}: adaptive clipping needs a CentralGaussianNoise stage with "
                f"clip_stage = {self.name!r} later in the chain"
            )
        return out, replace(state, clip=float(nxt), rounds=state.rounds + 1)


@dataclass(frozen=True)
class CentralGaussianNoise(BaseStage):
    """Server half of DP-FedAvg: sum / expected cohort + N(0, (z S / expected cohort)^2).

    Attributes:
        noise_multiplier: z, the multiplier charged per round (with adaptive clipping the update gets
            z_Delta > z and the count sigma_b, Andrew et al. 2021, Theorem 1).
        clip: S (fixed), or the initial clip norm (adaptive).
        expected_cohort: the fixed denominator: m (fixed-size sampling) or q*K (Poisson).
        adaptive: adaptive clipping parameters, or None.
        clip_stage: the name of the matching :class:`DPClip`.
        decode_error: the matching :class:`DPClip`'s bound on a later stage's per-coordinate rounding
            (a secure sum's fixed point): it adds to the bit's sensitivity, and the adaptive norm is
            kept at >= 2 e sqrt(d) so that the client's margin never exceeds it.
    """

    noise_multiplier: float = 1.0
    clip: float = 1.0
    expected_cohort: float = 1.0
    adaptive: AdaptiveClipConfig | None = None
    clip_stage: str = "dp_clip"
    decode_error: float = 0.0
    name: str = "dp_noise"
    traits: ClassVar[StageTraits] = StageTraits("noise", adds_noise_where="aggregate", client_side=False)

    def __post_init__(self) -> None:
        check_number(f"{self.name}: noise_multiplier", self.noise_multiplier, 0.0)
        check_number(f"{self.name}: expected_cohort", self.expected_cohort, 0.0, open_low=True)
        if self.adaptive is not None:
            self.clipper()  # validates 2 sigma_b > z before the first round

    def clipper(self) -> AdaptiveClipper:
        """Return the adaptive clipper (adaptive mode only)."""
        if self.adaptive is None:
            raise ConfigError(f"{self.name}: no adaptive clipping configured; expected adaptive settings")
        return AdaptiveClipper(
            self.adaptive, self.noise_multiplier, self.expected_cohort, BIT_SENSITIVITY + self.decode_error
        )

    def init_server(self, template: Params) -> AdaptiveClipState | None:
        return AdaptiveClipState(float(self.clip)) if self.adaptive is not None else None

    def server(self, aggregate: Params, state: Any, ctx: ServerContext) -> tuple[Params, Any]:
        generator = _torch_generator(ctx.rng)
        out = dict(aggregate)
        bit_key = f"{self.clip_stage}:{UNCLIPPED}"
        bits = out.pop(bit_key, None)
        if (bits is None) != (self.adaptive is None):
            raise ConfigError(
                f"{self.name}: adaptive = {self.adaptive is not None} but the aggregate "
                f"{'lacks' if bits is None else 'has'} {bit_key!r}; expected DPClip(adaptive=...) "
                "to match"
            )
        clip = state.clip if self.adaptive is not None else self.clip
        z = self.clipper().update_noise_multiplier() if self.adaptive is not None else self.noise_multiplier
        scale = ctx.num_clients / self.expected_cohort  # mean over the reporting clients -> fixed-denominator
        out = add_gaussian_noise({k: v * scale for k, v in out.items()}, z * clip / self.expected_cohort, generator)
        if bits is None:  # no adaptive clipping (checked above)
            return out, state
        shifted = float(bits.sum()) * ctx.num_clients  # equal weights: the mean of the shifted bits times m'
        state = self.clipper().step_count(state, shifted, generator)
        floor = 2 * self.decode_error * math.sqrt(model_numel(out))
        state = replace(state, clip=max(state.clip, floor)) if floor > 0 else state
        out[f"{self.clip_stage}:{NEXT_CLIP}"] = torch.tensor([state.clip], dtype=torch.float64)
        return out, state


@dataclass(frozen=True)
class LocalGaussian(BaseStage):
    """Local DP: clip to S and add N(0, (z S)^2) on the client; the server averages as usual.

    Each release is (epsilon, delta)-DP for the client's whole update against anyone who sees it
    (accounted as ``RoundSpec.unsampled(z)``, sensitivity 2S).
    """

    clip: float = 1.0
    noise_multiplier: float = 1.0
    name: str = "local_dp"
    traits: ClassVar[StageTraits] = StageTraits("noise", adds_noise_where="client")

    def encode(self, update: Params, state: Any, ctx: ClientContext) -> tuple[DensePayload, Any]:
        release = local_dp_release(update, self.clip, self.noise_multiplier, _torch_generator(ctx.rng))
        return DensePayload(release), state


def dp_stages(
    config: DPConfig, noise_multiplier: float, expected_cohort: float, decode_error: float = 0.0
) -> list[BaseStage]:
    """Return the pipeline stages of ``config``: [DPClip, CentralGaussianNoise] (central), [DPClip,
    TreeAggregationNoise] (ftrl, DP-FTRL of Kairouz et al. 2021), [LocalGaussian]
    (local), [] (dpsgd: the privacy is in local training, :func:`hamrah.algorithms.dpsgd.train_local_dpsgd`).

    Put a secure-aggregation stage between the two central stages if one is used, and pass its (and
    its codec's) per-coordinate rounding bound as ``decode_error`` (:func:`hamrah.pipeline.sensitivity.decode_error`).
    """
    if config.mode == "central":
        return [
            DPClip(config.clip, adaptive=config.adaptive is not None, decode_error=decode_error),
            CentralGaussianNoise(
                noise_multiplier, config.clip, expected_cohort, config.adaptive, decode_error=decode_error
            ),
        ]
    if config.mode == "ftrl" and config.tree_rounds is not None:  # DPConfig: ftrl always has tree_rounds
        return [
            DPClip(config.clip, decode_error=decode_error),
            TreeAggregationNoise(noise_multiplier, config.clip, expected_cohort, config.tree_rounds),
        ]
    if config.mode == "local":
        return [LocalGaussian(config.clip, noise_multiplier)]
    return []
