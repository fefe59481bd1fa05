"""Security metrics of a global model: main-task accuracy and attack success rate."""

from __future__ import annotations

from torch import nn

from hamrah.algorithms.local import evaluate
from hamrah.attacks.base import Attack
from hamrah.core.params import Params
from hamrah.data.federated import ArrayData


def main_accuracy(model: nn.Module, params: Params, test: ArrayData) -> float:
    """Return the accuracy of ``params`` on the clean test set."""
    return evaluate(model, params, test)[1]


def attack_success_rate(model: nn.Module, params: Params, test: ArrayData, attack: Attack) -> float | None:
    """Return the share of the attack's target inputs the model labels as the attacker wants.

    Backdoor: triggered test images whose true label is not the target, classified as the target.
    Targeted label flip: test images of the source class classified as the target. Untargeted
    attacks have no target: None (compare main accuracy with an unattacked run instead).
    """
    aimed = attack.success_data(test)
    if aimed is None or len(aimed) == 0:
        return None
    return evaluate(model, params, aimed)[1]
