"""Build an attack from its name and parameters, as a lab config names it."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from hamrah.attacks.adaptive import (
    FangKrum,
    FangTrim,
    FLTrustAdaptive,
    InnerProduct,
    MinMax,
    MinSum,
)
from hamrah.attacks.base import Attack
from hamrah.attacks.data import DistributedBackdoor, LabelFlip, PixelBackdoor
from hamrah.attacks.model import (
    GaussianUpdate,
    LittleIsEnough,
    ModelReplacement,
    ScaleUpdate,
    SignFlip,
)
from hamrah.core.errors import ConfigError

# name -> (data poisoning factory or None, update poisoning factory or None)
_PARTS: dict[str, tuple[Callable | None, Callable | None]] = {
    "none": (None, None),
    "label_flip": (LabelFlip, None),
    "targeted_flip": (lambda source=7, target=1, num_classes=10: LabelFlip(source, target, num_classes), None),
    "sign_flip": (None, SignFlip),
    "scale": (None, ScaleUpdate),
    "gaussian": (None, GaussianUpdate),
    "alie": (None, LittleIsEnough),
    "backdoor": (PixelBackdoor, None),
    "model_replacement": (PixelBackdoor, ModelReplacement),
    "min_max": (None, MinMax),
    "min_sum": (None, MinSum),
    "ipm": (None, InnerProduct),
    "fang_trim": (None, FangTrim),
    "fang_krum": (None, FangKrum),
    "fltrust_adaptive": (None, FLTrustAdaptive),
    "dba": (DistributedBackdoor, None),
}
ATTACKS = tuple(_PARTS)
TARGETED = ("targeted_flip", "backdoor", "model_replacement", "dba")


def _params_of(factory: Callable | None) -> dict[str, inspect.Parameter]:
    if factory is None:
        return {}
    return {k: v for k, v in inspect.signature(factory).parameters.items() if k != "self"}


def build_attack(name: str, malicious: frozenset[int], **params: Any) -> Attack:
    """Return the attack ``name`` played by the clients ``malicious``.

    Names and parameters: none; label_flip (num_classes); targeted_flip (source = 7, target = 1);
    sign_flip (scale); scale (factor); gaussian (std); alie (z); backdoor (target, fraction, size,
    margin, value); model_replacement (the backdoor's, plus boost); min_max and min_sum
    (perturbation = std | unit | sign, gamma_init); ipm (epsilon); fang_trim (b); fang_krum
    (threshold); fltrust_adaptive (cosine); dba (target, fraction, parts, size, gap, shift, value).

    Raises:
        ConfigError: an unknown name, an unknown or missing parameter, or an impossible value.

    Example:
        >>> build_attack("targeted_flip", frozenset({1, 2}), source=7, target=1).is_malicious(2)
        True
    """
    if name not in _PARTS:
        raise ConfigError(f"unknown attack {name!r}; expected one of {', '.join(_PARTS)}")
    data_f, update_f = _PARTS[name]
    data_p, update_p = _params_of(data_f), _params_of(update_f)
    for key in params:
        if key not in data_p and key not in update_p:
            allowed = [*data_p, *update_p]
            raise ConfigError(
                f"attack {name}: unknown parameter {key!r}; expected {', '.join(allowed) if allowed else 'none'}"
            )
    for sig in (data_p, update_p):
        missing = [k for k, p in sig.items() if p.default is inspect.Parameter.empty and k not in params]
        if missing:
            raise ConfigError(f"attack {name}: missing parameter {', '.join(missing)}")
    data = data_f(**{k: v for k, v in params.items() if k in data_p}) if data_f else None
    update = update_f(**{k: v for k, v in params.items() if k in update_p}) if update_f else None
    return Attack(name, frozenset() if name == "none" else frozenset(malicious), data, update)
