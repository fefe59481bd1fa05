"""The typed sections of a pipeline spec, each parsed once from plain data (a config table or the plan's JSON).

- ``[compression]``: one frozen dataclass per codec (:data:`CODEC_TYPES`; ``codec = "none"`` is None);
- ``[privacy]``: :class:`hamrah.privacy.config.DPConfig` (:func:`dp_config`; a flat config section goes
  through :func:`dp_settings` first);
- ``[secure_aggregation]``: :class:`SecureSpec`;
- ``[homomorphic_encryption]``: :class:`hamrah.he.stage.HESettings` (:func:`he_spec`; imported only when a
  run uses HE, as tenseal and phe come with it).

A parser refuses an unknown setting by name; values are checked by the stages the spec builds
(:meth:`hamrah.pipeline.PipelineSpec.chain`), which a spec does once where it is read. Each section's
JSON is :func:`dataclasses.asdict` of it, which its parser reads back.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar

from hamrah.core.errors import ConfigError
from hamrah.core.pipeline import Stage
from hamrah.core.settings import variant_settings
from hamrah.pipeline.registry import stage_factory
from hamrah.privacy.config import AdaptiveClipConfig, DPConfig

if TYPE_CHECKING:
    from hamrah.he.stage import HESettings

T = TypeVar("T")


@dataclass(frozen=True)
class QuantizeCodec:
    """``codec = "quantize"``: :class:`hamrah.compression.StochasticQuantizer` (``range``: its ring clip)."""

    bits: int = 8
    scheme: str = "minmax"
    range: float | None = None
    bucket: int | None = None
    codec: str = field(default="quantize", init=False)

    def stage(self) -> Stage:
        """Return the codec stage (ConfigError for a bad value)."""
        stage: Stage = stage_factory(self.codec)(self.bits, self.scheme, self.range, self.bucket)
        return stage


@dataclass(frozen=True)
class SignCodec:
    """``codec = "sign"``: :class:`hamrah.compression.SignEF`."""

    error_feedback: bool = True
    codec: str = field(default="sign", init=False)

    def stage(self) -> Stage:
        """Return the codec stage (ConfigError for a bad value)."""
        stage: Stage = stage_factory(self.codec)(self.error_feedback)
        return stage


@dataclass(frozen=True)
class TopKCodec:
    """``codec = "topk"``: :class:`hamrah.compression.TopK`."""

    fraction: float = 0.01
    error_feedback: bool = True
    value_dtype: str = "float32"
    codec: str = field(default="topk", init=False)

    def stage(self) -> Stage:
        """Return the codec stage (ConfigError for a bad value)."""
        stage: Stage = stage_factory(self.codec)(self.fraction, self.error_feedback, self.value_dtype)
        return stage


@dataclass(frozen=True)
class MaskCodec:
    """``codec = "mask"``: :class:`hamrah.compression.RandomMask`."""

    p: float = 0.1
    shared: bool = False
    codec: str = field(default="mask", init=False)

    def stage(self) -> Stage:
        """Return the codec stage (ConfigError for a bad value)."""
        stage: Stage = stage_factory(self.codec)(self.p, self.shared)
        return stage


@dataclass(frozen=True)
class HalfCodec:
    """``codec = "float16"`` or ``"bfloat16"``: :class:`hamrah.compression.HalfPrecision`."""

    codec: str = "float16"

    def stage(self) -> Stage:
        """Return the codec stage (ConfigError for a bad value)."""
        stage: Stage = stage_factory(self.codec)(self.codec)
        return stage


Codec: TypeAlias = QuantizeCodec | SignCodec | TopKCodec | MaskCodec | HalfCodec
# codec name -> its settings' type (codec = "none" has none: the spec's compression is None)
CODEC_TYPES: dict[str, Callable[..., Codec]] = {
    "quantize": QuantizeCodec,
    "sign": SignCodec,
    "topk": TopKCodec,
    "mask": MaskCodec,
    "float16": HalfCodec,
    "bfloat16": HalfCodec,
}


def _settings_of(cls: Any) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls) if f.name != "codec")


# codec name -> the settings it takes (anything else in [compression] is refused by name)
CODECS: dict[str, tuple[str, ...]] = {"none": (), **{name: _settings_of(cls) for name, cls in CODEC_TYPES.items()}}


def compression_spec(section: Mapping[str, Any] | None) -> Codec | None:
    """Return the codec ``section`` names (``{"codec": "quantize", "bits": 8}``), or None for none or "none".

    Raises:
        ConfigError: an unknown codec or a setting the codec does not take, named.
    """
    if section is None:
        return None
    name, settings = variant_settings(section, "codec", "none", CODECS, "compression", "codec")
    if name == "none":
        return None
    return HalfCodec(name) if CODEC_TYPES[name] is HalfCodec else CODEC_TYPES[name](**settings)


def codec_stage(codec: Codec | None) -> Stage | None:
    """Return the stage of ``codec`` (None for none).

    Raises:
        ConfigError: a bad value, prefixed with ``compression:``.
    """
    if codec is None:
        return None
    try:
        return codec.stage()
    except ConfigError as err:
        raise ConfigError(f"compression: {err}") from None


@dataclass(frozen=True)
class SecureSpec:
    """``[secure_aggregation]``: :class:`hamrah.secagg.stage.SecureAggregation`'s settings; under
    ``privacy.mode = "distributed"`` the DDG stage's (:func:`hamrah.pipeline.distributed.distributed_stage`)."""

    variant: str = "secagg"
    clip: float = 1.0
    input_bits: int = 16
    ring_bits: int | None = None
    min_contributors: int | None = None
    malicious_server: bool = False

    def stage(self) -> Stage:
        """Return the secure-sum stage (ConfigError for a bad value)."""
        stage: Stage = stage_factory("secagg")(**dataclasses.asdict(self))
        return stage


def typed_section(cls: Callable[..., T], section: Mapping[str, Any], where: str) -> T:
    """Return ``cls(**section)`` for a dataclass ``cls``, an unknown setting refused by name.

    Raises:
        ConfigError: ``{where}.{key}: unknown setting``, listing the settings ``cls`` takes.
    """
    known = sorted(f.name for f in dataclasses.fields(cls) if f.init)  # type: ignore[arg-type]  # a dataclass
    unknown = sorted(set(section) - set(known))
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}: unknown setting; expected one of {', '.join(known)}")
    return cls(**section)


def secure_spec(section: Mapping[str, Any] | None) -> SecureSpec | None:
    """Return the ``[secure_aggregation]`` settings of ``section`` (None: absent)."""
    return None if section is None else typed_section(SecureSpec, section, "secure_aggregation")


def dp_config(settings: Mapping[str, Any] | None) -> DPConfig | None:
    """Return the DPConfig of plain ``settings`` (DPConfig's fields; ``adaptive`` a table or None)."""
    if settings is None:
        return None
    d = dict(settings)
    if isinstance(d.get("adaptive"), Mapping):
        d["adaptive"] = typed_section(AdaptiveClipConfig, d["adaptive"], "privacy.adaptive")
    return typed_section(DPConfig, d, "privacy")


_ADAPTIVE_KEYS = {
    "target_quantile": "target_quantile",
    "clip_learning_rate": "learning_rate",
    "clip_count_stddev": "clip_count_stddev",
}


def dp_settings(section: Mapping[str, Any]) -> dict[str, Any]:
    """Return DPConfig's settings from a flat ``[privacy]`` section (``adaptive = true`` plus
    ``target_quantile``, ``clip_learning_rate``, ``clip_count_stddev``)."""
    d = dict(section)
    adaptive = {new: d.pop(old) for old, new in _ADAPTIVE_KEYS.items() if old in d}
    d["adaptive"] = adaptive if d.get("adaptive") else None
    return d


def he_spec(settings: Mapping[str, Any] | None) -> HESettings | None:
    """Return the resolved HE settings of plain ``settings`` (HESettings' fields), or None; imports tenseal
    and phe only when there are settings."""
    if settings is None:
        return None
    from hamrah.he.stage import HESettings

    return typed_section(HESettings, settings, "homomorphic_encryption")


__all__ = [
    "CODECS",
    "CODEC_TYPES",
    "Codec",
    "HalfCodec",
    "MaskCodec",
    "QuantizeCodec",
    "SecureSpec",
    "SignCodec",
    "TopKCodec",
    "codec_stage",
    "compression_spec",
    "dp_config",
    "dp_settings",
    "he_spec",
    "secure_spec",
    "typed_section",
]
