"""A run's client-update pipeline as one typed, JSON-ready spec: which stages, in which order, built lazily.

One :class:`PipelineSpec` is resolved from an experiment's ``[compression]``, ``[privacy]``,
``[secure_aggregation]`` and ``[homomorphic_encryption]`` sections (:func:`resolve_pipeline`), travels
to devices in the FL plan's ``extra["pipeline"]`` (:meth:`PipelineSpec.to_json`, read back by
:meth:`PipelineSpec.from_json`) and rebuilds the same :class:`~hamrah.core.pipeline.Chain` on every side:

- central DP: ``[DPClip, codec, CentralGaussianNoise]`` (McMahan et al. 2018; adaptive clipping of
  Andrew et al. 2021): the client clips then compresses, the server noises the aggregate;
- local DP: ``[LocalGaussian, codec]``: clipped and noised on the client, then compressed;
- compression only: ``[codec]``;
- with ``[secure_aggregation]``, :class:`~hamrah.secagg.stage.SecureAggregation` after the codec (and
  before central noise, which the server then adds to the unmasked sum);
- with ``[homomorphic_encryption]``, :class:`~hamrah.he.stage.HomomorphicSum` in the same place: clients
  encrypt, the sum is decrypted by the run's :class:`~hamrah.he.stage.KeyHolder` (central noise after
  decryption). The spec carries the public key only (:attr:`PipelineSpec.public_key`), never the secret
  key, which stays in the key holder of the driver that aggregates.

Every section is a frozen dataclass (:mod:`hamrah.pipeline.sections`), parsed and checked once where the
spec is read (the config, or the plan on a device); nothing is re-parsed on access. Stages are built
through the lazy registry (:mod:`hamrah.pipeline.registry`): a run without DP imports neither
``hamrah.privacy``'s accountant nor dp_accounting, a run without HE neither tenseal nor phe.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from hamrah.core.errors import ConfigError
from hamrah.core.pipeline import Chain, Stage
from hamrah.pipeline.registry import stage_factory
from hamrah.pipeline.sections import (
    Codec,
    SecureSpec,
    codec_stage,
    compression_spec,
    dp_config,
    he_spec,
    secure_spec,
)
from hamrah.privacy.config import DPConfig

if TYPE_CHECKING:
    from hamrah.he.stage import HESettings, KeyHolder
    from hamrah.privacy.accounting import RoundSpec

# where a spec travels in an FL plan's ``extra``, and the server state devices read (adaptive clipping's norm)
PLAN_KEY, STATE_KEY = "pipeline", "pipeline/server_state"


@dataclass(frozen=True)
class PipelineSpec:
    """Everything needed to rebuild a run's chain on any side; JSON-ready (:meth:`to_json`).

    Attributes:
        compression: the codec's settings, or None for no codec.
        dp: the DP settings, or None for no DP.
        noise_multiplier: z, resolved (configured, or calibrated to the target epsilon).
        population: K, the clients that may be sampled.
        cohort: m, clients per round (fixed-size sampling) or the expected q*K (Poisson).
        secure: the secure aggregation settings, or None: with them the server sees only the sum of the
            updates (noise, if central, is added after unmasking).
        homomorphic: the resolved homomorphic encryption settings, or None for no encryption.
        public_key: the key holder's public key (what devices encrypt under) once a key holder exists;
            never a secret key.
    """

    compression: Codec | None = None
    dp: DPConfig | None = None
    noise_multiplier: float = 0.0
    population: int = 1
    cohort: int = 1
    secure: SecureSpec | None = None
    homomorphic: HESettings | None = None
    public_key: bytes | None = field(default=None, repr=False)

    @property
    def equal_weights(self) -> bool:
        """Return True when clients are weighted 1 each (DP's sensitivity bound), not by n_k."""
        return self.dp is not None

    @property
    def poisson_q(self) -> float | None:
        """Return q when the accounting assumes Poisson sampling (the driver must sample so), else None."""
        dp = self.dp
        return (
            self.cohort / self.population
            if dp is not None and dp.mode in ("central", "distributed") and dp.sampling == "poisson"
            else None
        )

    @property
    def tree_rounds(self) -> int | None:
        """Return k when DP-FTRL's accounting assumes each client at most once per tree of k rounds, else None."""
        dp = self.dp
        return dp.tree_rounds if dp is not None and dp.mode == "ftrl" else None

    @property
    def claims_sampling(self) -> bool:
        """Return True when the epsilon rests on how clients are sampled (central DP-FedAvg and distributed
        DP: Poisson or fixed-size draws), which a driver that takes whoever checks in cannot prove."""
        dp = self.dp
        return dp is not None and dp.mode in ("central", "distributed")

    def cohort_of(
        self, round_idx: int, population: int, rng_for_tree: Callable[[int], np.random.Generator]
    ) -> np.ndarray | None:
        """Return round ``round_idx``'s cohort under DP-FTRL: the tree's rounds take disjoint slices of
        one permutation of the population (each client at most once per tree); None without DP-FTRL.

        Args:
            round_idx: 1-based round. population: K.
            rng_for_tree: tree index -> a numpy Generator (the same for every round of that tree).
        """
        k = self.tree_rounds
        if k is None:
            return None
        tree, pos = divmod(round_idx - 1, k)
        perm = rng_for_tree(tree).permutation(population)
        return np.sort(perm[pos * self.cohort : (pos + 1) * self.cohort])

    def check_model(self, model: torch.nn.Module) -> None:
        """Refuse a model whose running statistics would be noised as weights under DP.

        BatchNorm's running mean and variance travel with the update (``hamrah.core.params.model_state``);
        under DP they would be clipped and noised like the weights, and a noised running variance can go
        negative (NaN at evaluation). GroupNorm and LayerNorm keep no running statistics (Opacus refuses
        BatchNorm for the same reason).

        Raises:
            ConfigError: DP is configured and the model has floating-point buffers, naming them.
        """
        if self.dp is None:
            return
        buffers = [name for name, b in model.named_buffers() if b.is_floating_point()]
        if buffers:
            raise ConfigError(
                f"[privacy] with model {type(model).__name__}: its running statistics ({', '.join(buffers[:3])}"
                f"{', ...' if len(buffers) > 3 else ''}) would be noised like weights and a noised variance can go "
                "negative; expected a model without BatchNorm under DP (use GroupNorm or LayerNorm)"
            )

    def with_public_key(self, data: bytes) -> PipelineSpec:
        """Return this spec carrying the public key ``data`` (what devices encrypt under)."""
        return dataclasses.replace(self, public_key=data)

    def stages(self, key_holder: KeyHolder | None = None) -> list[Stage]:
        """Return the chain's stages (see the module docstring for the order); ``key_holder`` goes to the
        homomorphic stage on the side that decrypts sums."""
        codec = codec_stage(self.compression)
        dp = self.dp
        if dp is not None and dp.mode == "distributed":  # DDG noise on the clients, summed under SecAgg
            ddg: Stage = stage_factory("distributed_dp")(dp, self.noise_multiplier, self.cohort, self.secure, codec)
            return [ddg]
        codecs = [codec] if codec is not None else []
        secure = [self.secure.stage()] if self.secure is not None else []
        if self.homomorphic is not None:
            secure.append(stage_factory("homomorphic")(self.homomorphic, self.public_key, key_holder))
        err = 0.0  # under a secure sum the client bounds its own contribution (hamrah.pipeline.sensitivity)
        ring = all(c.traits.summable_in_ring for c in codecs)
        if dp is not None and dp.mode in ("central", "ftrl") and secure and ring:
            from hamrah.pipeline.sensitivity import decode_error

            err = decode_error([*codecs, *secure])
        if dp is None:
            return codecs + secure
        privacy: list[Stage] = stage_factory("dp")(dp, self.noise_multiplier, float(self.cohort), err)
        if dp.mode in ("central", "ftrl"):
            return [privacy[0], *codecs, *secure, privacy[1]]
        return privacy + codecs + secure

    def chain(self, key_holder: KeyHolder | None = None) -> Chain:
        """Return the checked chain (ConfigError with the reason if it cannot work)."""
        stages = self.stages(key_holder)
        if self.homomorphic is not None:
            _check_homomorphic(self, stages)
        return Chain(stages)

    def round_spec(self) -> RoundSpec | None:
        """Return the mechanism charged per round, or None without DP."""
        dp = self.dp
        if dp is None or dp.mode == "distributed":
            return None
        from hamrah.privacy.accounting import round_spec_for

        return round_spec_for(dp, self.noise_multiplier, self.population, self.cohort)

    def to_json(self) -> dict[str, Any]:
        """Return the spec as JSON-ready plain data, what :meth:`from_json` reads (each section its fields,
        the public key as base64 text)."""
        out = dataclasses.asdict(dataclasses.replace(self, public_key=None))
        if self.public_key is not None:
            from hamrah.he.stage import encode_public_key

            out["public_key"] = encode_public_key(self.public_key)
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PipelineSpec:
        """Return the spec :meth:`to_json` wrote, parsed once and checked by building its chain.

        Raises:
            ConfigError: a field is missing, unknown or wrong, or the chain cannot work.
        """
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(known)) if isinstance(data, Mapping) else []
        if unknown:
            raise ConfigError(f"pipeline spec: unknown field {unknown[0]!r}; expected {', '.join(known)}")
        try:
            key = data["public_key"]
            if key is not None:
                from hamrah.he.stage import decode_public_key

                key = decode_public_key(key)
            spec = cls(
                compression_spec(data["compression"]),
                dp_config(data["dp"]),
                float(data["noise_multiplier"]),
                int(data["population"]),
                int(data["cohort"]),
                secure_spec(data["secure"]),
                he_spec(data["homomorphic"]),
                key,
            )
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise ConfigError(f"pipeline spec: missing or malformed field ({err!r})") from None
        spec.chain()
        return spec


def resolve_pipeline(
    compression: Mapping[str, Any] | None,
    privacy: Mapping[str, Any] | None,
    population: int,
    cohort: int,
    rounds: int,
    secure: Mapping[str, Any] | None = None,
    homomorphic: Mapping[str, Any] | None = None,
) -> PipelineSpec | None:
    """Return the run's pipeline (None when no section is set), its chain checked and z resolved.

    Args:
        compression, privacy, secure, homomorphic: the config sections as plain data (None: absent);
            ``homomorphic``'s unset settings take defaults (:func:`~hamrah.he.stage.he_settings`).
        population: K. cohort: m per round (the expected cohort under Poisson sampling).
        rounds: planned rounds, to calibrate z to ``privacy.target_epsilon`` when z is not given.

    ``privacy.mode = "dpsgd"`` is checked here but is no stage: DP-SGD runs in local training (the
    algorithm's plan, :mod:`hamrah.algorithms.dpsgd`), so with no other section the run has no pipeline.

    Raises:
        ConfigError: a bad setting or an impossible chain.
    """
    dp = dp_config(privacy)
    if dp is not None and dp.mode == "dpsgd":
        dp = None  # checked; in local training, not in the pipeline
    if compression is None and dp is None and secure is None and homomorphic is None:
        return None
    z = 0.0
    if dp is not None:
        from hamrah.privacy.accounting import noise_multiplier_for, round_spec_for

        z = (
            (dp.noise_multiplier or 0.0)
            if dp.mode == "distributed"
            else noise_multiplier_for(dp, rounds, round_spec_for(dp, 1.0, population, cohort))
        )
        if dp.mode == "ftrl" and dp.tree_rounds is not None and dp.tree_rounds * cohort > population:
            raise ConfigError(
                f"privacy.tree_rounds = {dp.tree_rounds} with {cohort} clients a round and {population} "
                "in all: DP-FTRL's accounting needs each client at most once per tree, so expected "
                f"tree_rounds <= {population // max(cohort, 1)} (population / cohort)"
            )
    he = None
    if homomorphic is not None:
        from hamrah.he.stage import default_max_weight, he_settings

        if cohort < 2:
            raise ConfigError(
                f"[homomorphic_encryption] with {cohort} client a round: the decrypted sum of one client's update "
                "is that update; expected at least 2 clients a round"
            )

        he = he_settings(homomorphic, default_max_weight(dp is not None, cohort))
    spec = PipelineSpec(
        compression_spec(compression), dp, float(z), int(population), int(cohort), secure_spec(secure), he
    )
    spec.chain()
    return spec


def _check_homomorphic(spec: PipelineSpec, stages: list[Stage]) -> None:
    """Refuse chains homomorphic encryption cannot serve, with the reason (before the generic chain rules)."""
    if spec.secure is not None:
        raise ConfigError(
            "[homomorphic_encryption] with [secure_aggregation]: each already shows the server only "
            "the sum of the updates, and the second would hide an already hidden update; expected "
            "one of the two sections"
        )
    codec = spec.compression.codec if spec.compression is not None else "none"
    for st in stages:
        if st.traits.kind == "codec" and not st.traits.summable_in_ring:
            raise ConfigError(
                f"compression.codec = {codec!r} before [homomorphic_encryption]:"
                " its payload (per-client indices, signs or scales) cannot be added under encryption;"
                ' expected codec = "none" or quantize with scheme = "ring" (a range shared by '
                "all clients)"
            )


__all__ = ["PipelineSpec", "resolve_pipeline"]
