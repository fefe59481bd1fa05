"""A run's client-update pipeline as one typed, JSON-ready spec: which stages, in which order, built lazily.

One :class:`PipelineSpec` is resolved from an experiment's ``[compression]``, ``[privacy]``,
``[secure_aggregation]`` and ``[homomorphic_encryption]`` sections (:func:`resolve_pipeline`), travels
to devices in the FL plan's ``extra["pipeline"]`` and rebuilds the same
:class:`~hamrah.core.pipeline.Chain` on every side:

- central DP: ``[DPClip, codec, CentralGaussianNoise]`` (McMahan et al. 2018; adaptive clipping of
  Andrew et al. 2021): the client clips then compresses, the server noises the aggregate;
- local DP: ``[LocalGaussian, codec]``: clipped and noised on the client, then compressed;
- compression only: ``[codec]``;
- with ``[secure_aggregation]``, :class:`~hamrah.secagg.stage.SecureAggregation` after the codec (and
  before central noise, which the server then adds to the unmasked sum);
- with ``[homomorphic_encryption]``, :class:`~hamrah.he.stage.HomomorphicSum` in the same place: clients
  encrypt, the sum is decrypted by the run's :class:`~hamrah.he.stage.KeyHolder` (central noise after
  decryption). The spec carries the public key only (``homomorphic["public_key"]``, base64), never the
  secret key, which stays in the key holder of the driver that aggregates.

Stages are built through a lazy registry: a run without DP imports neither ``hamrah.privacy``'s
accountant nor dp_accounting, a run without HE neither tenseal nor phe (``tests/pipeline``). The
settings are parsed once per spec (:attr:`PipelineSpec.dp`, :meth:`PipelineSpec.he_settings` are
cached), not on every access.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np

from hamrah.core.errors import ConfigError
from hamrah.core.pipeline import Chain, Stage
from hamrah.core.settings import variant_settings

if TYPE_CHECKING:
    from hamrah.he.stage import HESettings, KeyHolder
    from hamrah.privacy.accounting import RoundSpec
    from hamrah.privacy.config import DPConfig

# stage name -> "module:attribute", imported only when a spec uses it (the lazy stage registry)
STAGES: dict[str, str] = {
    "quantize": "hamrah.compression:StochasticQuantizer",
    "sign": "hamrah.compression:SignEF",
    "topk": "hamrah.compression:TopK",
    "mask": "hamrah.compression:RandomMask",
    "float16": "hamrah.compression:HalfPrecision",
    "bfloat16": "hamrah.compression:HalfPrecision",
    "secagg": "hamrah.secagg.stage:SecureAggregation",
    "homomorphic": "hamrah.he.stage:HomomorphicSum",
    "dp": "hamrah.privacy.stages:dp_stages",
    "distributed_dp": "hamrah.pipeline.distributed:distributed_stage",
}


def stage_factory(name: str) -> Any:
    """Return the class or factory the lazy registry holds for stage ``name``, importing its module now.

    Raises:
        ConfigError: an unknown stage name.
    """
    if name not in STAGES:
        raise ConfigError(f"pipeline stage {name!r}: expected one of {', '.join(STAGES)}")
    module, attr = STAGES[name].split(":")
    return getattr(importlib.import_module(module), attr)


# codec name -> the settings it takes (anything else in [compression] is refused by name)
CODECS: dict[str, tuple[str, ...]] = {
    "none": (),
    "quantize": ("bits", "scheme", "range", "bucket"),
    "sign": ("error_feedback",),
    "topk": ("fraction", "error_feedback", "value_dtype"),
    "mask": ("p", "shared"),
    "float16": (),
    "bfloat16": (),
}


def codec_stage(settings: Mapping[str, Any]) -> Stage | None:
    """Return the codec stage ``settings`` name (``{"codec": "quantize", "bits": 8}``), or None for "none".

    Raises:
        ConfigError: an unknown codec, a setting the codec does not take, or a bad value, named.
    """
    name, s = variant_settings(settings, "codec", "none", CODECS, "compression", "codec")
    try:
        return _build_codec(name, s)
    except ConfigError as err:
        raise ConfigError(f"compression: {err}") from None


def _build_codec(name: str, s: dict) -> Stage | None:
    if name == "none":
        return None
    cls = stage_factory(name)
    if name == "quantize":
        return cls(s.get("bits", 8), s.get("scheme", "minmax"), s.get("range"), s.get("bucket"))
    if name == "sign":
        return cls(s.get("error_feedback", True))
    if name == "topk":
        return cls(s.get("fraction", 0.01), s.get("error_feedback", True), s.get("value_dtype", "float32"))
    if name == "mask":
        return cls(s.get("p", 0.1), s.get("shared", False))
    return cls(name)  # float16, bfloat16


def dp_config(settings: Mapping[str, Any] | None) -> DPConfig | None:
    """Return the DPConfig of plain ``settings`` (DPConfig's fields; ``adaptive`` a table or None)."""
    if settings is None:
        return None
    from hamrah.privacy.config import AdaptiveClipConfig, DPConfig

    d = dict(settings)
    fields = {f.name for f in dataclasses.fields(DPConfig)}
    unknown = sorted(set(d) - fields)
    if unknown:
        raise ConfigError(f"privacy.{unknown[0]}: unknown setting; expected one of {', '.join(sorted(fields))}")
    if isinstance(d.get("adaptive"), Mapping):
        d["adaptive"] = AdaptiveClipConfig(**d["adaptive"])
    return DPConfig(**d)


_ADAPTIVE_KEYS = {
    "target_quantile": "target_quantile",
    "clip_learning_rate": "learning_rate",
    "clip_count_stddev": "clip_count_stddev",
}


def dp_settings(section: Mapping[str, Any]) -> dict:
    """Return DPConfig's settings from a flat ``[privacy]`` section (``adaptive = true`` plus
    ``target_quantile``, ``clip_learning_rate``, ``clip_count_stddev``)."""
    d = dict(section)
    adaptive = {new: d.pop(old) for old, new in _ADAPTIVE_KEYS.items() if old in d}
    d["adaptive"] = adaptive if d.get("adaptive") else None
    return d


@dataclass(frozen=True)
class PipelineSpec:
    """Everything needed to rebuild a run's chain on any side; JSON-ready (:meth:`to_dict`).

    Attributes:
        compression: ``{"codec": name, setting: value}``.
        privacy: DPConfig's fields as plain data, or None for no DP.
        noise_multiplier: z, resolved (configured, or calibrated to the target epsilon).
        population: K, the clients that may be sampled.
        cohort: m, clients per round (fixed-size sampling) or the expected q*K (Poisson).
        secure: ``SecureAggregation``'s settings (variant, clip, input_bits), or None: the server then
            sees only the sum of the updates (noise, if central, is added after unmasking).
        homomorphic: :class:`~hamrah.he.stage.HESettings` as plain data plus, once a key holder exists,
            ``"public_key"`` (base64); None for no encryption. Never a secret key.
    """

    compression: dict
    privacy: dict | None = None
    noise_multiplier: float = 0.0
    population: int = 1
    cohort: int = 1
    secure: dict | None = None
    homomorphic: dict | None = None

    @cached_property
    def dp(self) -> DPConfig | None:
        """Return the parsed DP settings (parsed once per spec), or None."""
        return dp_config(self.privacy)

    @property
    def equal_weights(self) -> bool:
        """Return True when clients are weighted 1 each (DP's sensitivity bound), not by n_k."""
        return self.privacy is not None

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

    def cohort_of(self, round_idx: int, population: int, rng_for_tree) -> np.ndarray | None:
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

    def he_settings(self) -> HESettings | None:
        """Return the homomorphic encryption settings (without the public key), or None (parsed once)."""
        return self._he

    @cached_property
    def _he(self) -> HESettings | None:
        if self.homomorphic is None:
            return None
        from hamrah.he.stage import HESettings

        try:
            return HESettings(**{k: v for k, v in self.homomorphic.items() if k != "public_key"})
        except TypeError as err:
            raise ConfigError(
                f"pipeline spec: homomorphic settings {sorted(self.homomorphic)}: expected the fields "
                f"of HESettings ({err})"
            ) from None

    def public_key(self) -> bytes | None:
        """Return the key holder's public key bytes the spec carries, or None."""
        text = (self.homomorphic or {}).get("public_key")
        if text is None:
            return None
        from hamrah.he.stage import decode_public_key

        return decode_public_key(text)

    def with_public_key(self, data: bytes) -> PipelineSpec:
        """Return this spec carrying the public key ``data`` (what devices encrypt under)."""
        from hamrah.he.stage import encode_public_key

        return dataclasses.replace(
            self, homomorphic={**self.he_settings().to_dict(), "public_key": encode_public_key(data)}
        )

    def stages(self, key_holder: KeyHolder | None = None) -> list[Stage]:
        """Return the chain's stages (see the module docstring for the order); ``key_holder`` goes to the
        homomorphic stage on the side that decrypts sums."""
        codec = codec_stage(self.compression)
        dp = self.dp
        if dp is not None and dp.mode == "distributed":  # DDG noise on the clients, summed under SecAgg
            return [stage_factory("distributed_dp")(dp, self.noise_multiplier, self.cohort, self.secure, codec)]
        codecs = [codec] if codec is not None else []
        secure = [stage_factory("secagg")(**self.secure)] if self.secure is not None else []
        if self.homomorphic is not None:
            secure.append(stage_factory("homomorphic")(self.he_settings(), self.public_key(), key_holder))
        err = 0.0  # under a secure sum the client bounds its own contribution (hamrah.pipeline.sensitivity)
        ring = all(c.traits.summable_in_ring for c in codecs)
        if dp is not None and dp.mode in ("central", "ftrl") and secure and ring:
            from hamrah.pipeline.sensitivity import decode_error

            err = decode_error([*codecs, *secure])
        privacy = stage_factory("dp")(dp, self.noise_multiplier, float(self.cohort), err) if dp is not None else []
        if dp is not None and dp.mode in ("central", "ftrl"):
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

    def to_dict(self) -> dict:
        """Return the spec as plain JSON-ready data (what :meth:`from_dict` reads)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PipelineSpec:
        """Return the spec :meth:`to_dict` wrote (checked by building its chain).

        Raises:
            ConfigError: a field is missing or wrong, or the chain cannot work.
        """
        try:
            spec = cls(
                dict(d["compression"]),
                None if d.get("privacy") is None else dict(d["privacy"]),
                float(d["noise_multiplier"]),
                int(d["population"]),
                int(d["cohort"]),
                None if d.get("secure") is None else dict(d["secure"]),
                None if d.get("homomorphic") is None else dict(d["homomorphic"]),
            )
        except (KeyError, TypeError, ValueError) as err:
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

    Raises:
        ConfigError: a bad setting, an impossible chain, or (on-device DP-SGD) a mode not wired into runs.
    """
    if compression is None and privacy is None and secure is None and homomorphic is None:
        return None
    dp = dp_config(privacy)
    z = 0.0
    if dp is not None:
        from hamrah.privacy.accounting import noise_multiplier_for, round_spec_for

        if dp.mode == "dpsgd":
            raise ConfigError(
                'privacy.mode = "dpsgd": on-device DP-SGD changes local training and is not a '
                'pipeline stage; expected "central" or "local" (see docs/dp.md for DP-SGD)'
            )
        z = (
            (dp.noise_multiplier or 0.0)
            if dp.mode == "distributed"
            else noise_multiplier_for(dp, rounds, round_spec_for(dp, 1.0, population, cohort))
        )
        if dp.mode == "ftrl" and dp.tree_rounds * cohort > population:
            raise ConfigError(
                f"privacy.tree_rounds = {dp.tree_rounds} with {cohort} clients a round and {population} "
                "in all: DP-FTRL's accounting needs each client at most once per tree, so expected "
                f"tree_rounds <= {population // max(cohort, 1)} (population / cohort)"
            )
    he = None
    if homomorphic is not None:
        from hamrah.he.stage import default_max_weight, he_settings

        he = he_settings(homomorphic, default_max_weight(privacy is not None, cohort)).to_dict()
    spec = PipelineSpec(
        dict(compression or {"codec": "none"}),
        None if privacy is None else dict(privacy),
        float(z),
        int(population),
        int(cohort),
        None if secure is None else dict(secure),
        he,
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
    for st in stages:
        if st.traits.kind == "codec" and not st.traits.summable_in_ring:
            raise ConfigError(
                f"compression.codec = {spec.compression.get('codec')!r} before [homomorphic_encryption]:"
                " its payload (per-client indices, signs or scales) cannot be added under encryption;"
                ' expected codec = "none" or quantize with scheme = "ring" (a range shared by '
                "all clients)"
            )


__all__ = [
    "CODECS",
    "STAGES",
    "PipelineSpec",
    "codec_stage",
    "dp_config",
    "dp_settings",
    "resolve_pipeline",
    "stage_factory",
]
