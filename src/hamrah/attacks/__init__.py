"""Attacks on federated learning, for the simulator's ``attack=`` hook and the security lab.

Data poisoning (label flipping, backdoor triggers, the distributed backdoor DBA), model poisoning
(sign flipping, scaling, noise, "a little is enough", model replacement) and attacks crafted against
the robust rules (min-max, min-sum, IPM, Fang et al.'s on Krum and the trimmed mean, one adapted to
FLTrust), the seeded choice of malicious clients, and the metrics
(main-task accuracy, attack success rate).
"""

from hamrah.attacks.adaptive import (
    FangKrum,
    FangTrim,
    FLTrustAdaptive,
    InnerProduct,
    MinMax,
    MinSum,
)
from hamrah.attacks.base import Attack, DataPoisoning, UpdatePoisoning, choose_malicious
from hamrah.attacks.data import DistributedBackdoor, LabelFlip, PixelBackdoor
from hamrah.attacks.metrics import attack_success_rate, main_accuracy
from hamrah.attacks.model import (
    GaussianUpdate,
    LittleIsEnough,
    ModelReplacement,
    ScaleUpdate,
    SignFlip,
    z_max,
)
from hamrah.attacks.registry import ATTACKS, TARGETED, build_attack

__all__ = [
    "ATTACKS",
    "TARGETED",
    "Attack",
    "DataPoisoning",
    "DistributedBackdoor",
    "FLTrustAdaptive",
    "FangKrum",
    "FangTrim",
    "GaussianUpdate",
    "InnerProduct",
    "LabelFlip",
    "LittleIsEnough",
    "MinMax",
    "MinSum",
    "ModelReplacement",
    "PixelBackdoor",
    "ScaleUpdate",
    "SignFlip",
    "UpdatePoisoning",
    "attack_success_rate",
    "build_attack",
    "choose_malicious",
    "main_accuracy",
    "z_max",
]
