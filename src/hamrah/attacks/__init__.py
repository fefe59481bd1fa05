"""Attacks on federated learning, for the simulator's ``attack=`` hook and the security lab.

Data poisoning (label flipping, backdoor triggers), model poisoning (sign flipping, scaling, noise,
"a little is enough", model replacement), the seeded choice of malicious clients, and the metrics
(main-task accuracy, attack success rate).
"""

from hamrah.attacks.base import Attack, DataPoisoning, UpdatePoisoning, choose_malicious
from hamrah.attacks.data import LabelFlip, PixelBackdoor
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
    "GaussianUpdate",
    "LabelFlip",
    "LittleIsEnough",
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
