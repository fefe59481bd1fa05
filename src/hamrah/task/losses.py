"""The built-in loss: cross-entropy averaged over the targets that are not padding."""

from __future__ import annotations

import torch
import torch.nn.functional as F

PAD_LABEL = -100  # targets with this value are ignored by the loss (torch's default ignore_index)


def masked_mean_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy per leading row, averaged over its targets that are not ``PAD_LABEL``.

    ``logits`` is ``[..., C]`` and ``y`` the same shape without ``C``; returns one loss per entry of
    the first dimension (a client in batched training), 0 where a row has no valid target.
    """
    losses = F.cross_entropy(logits.flatten(0, -2), y.flatten(), ignore_index=PAD_LABEL, reduction="none")
    losses = losses.view(y.shape[0], -1)
    count = (y != PAD_LABEL).view(y.shape[0], -1).sum(1)
    return losses.sum(1) / count.clamp(min=1)
