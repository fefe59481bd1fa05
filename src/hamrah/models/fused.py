"""Hand-written SGD steps: forward, backward and update in one pass, no autograd, no gradient tensors.

On CPU, a plain-SGD step of McMahan's CNN with a batch of 10 spends a third or more of its time
around the convolutions: autograd bookkeeping, NCHW max pooling (several times slower than NHWC in
oneDNN), layout conversions around the 1-channel first convolution, the 3136x512 dense layer
streamed from memory three times (forward, input gradient, weight gradient) and twice more by the
optimizer. This step keeps activations channels-last, runs the first convolution as one GEMM over
image patches (its output comes out channels-last, its weight gradient is one more GEMM), pools
before the ReLU (the two commute), computes the dense layer as ``W @ x.T`` (the fast GEMM shape for
10 rows) and folds each weight gradient into its update (``W.addmm_(dz.T, x, alpha=-lr)``).
It computes the same loss and update as ``train_local``'s autograd loop (tested).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

_CL = torch.channels_last
_aten = torch.ops.aten


def _xent_grad(z: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean cross-entropy of logits ``z`` [B, C] against class ids ``y`` [B], and its gradient."""
    label = y.unsqueeze(1)
    log_p = torch.log_softmax(z, 1)
    loss = -log_p.gather(1, label).mean()
    dz = log_p.exp_().scatter_add_(1, label, torch.full_like(label, -1, dtype=z.dtype))
    return loss, dz.div_(len(y))


def _dense_backward(dz, x, w, b, lr, relu_input: bool):
    """Input gradient of ``x @ w.T + b`` (masked by ReLU'(x) if asked), then the in-place update."""
    dx = _aten.threshold_backward(dz @ w, x, 0) if relu_input else None
    w.addmm_(dz.t(), x, alpha=-lr)
    b.sub_(dz.sum(0), alpha=lr)
    return dx


def _conv_backward(dz, x, w, b, lr, padding: int):
    """Input gradient of a stride-1 convolution (oneDNN), then the in-place update."""
    dx, dw, db = _aten.convolution_backward(
        dz, x, w, [w.shape[0]], [1, 1], [padding, padding], [1, 1], False, [0, 0], 1, [True, True, True]
    )
    w.sub_(dw, alpha=lr)
    b.sub_(db, alpha=lr)
    return dx


def _patches(x: torch.Tensor, k: int, pad: int) -> torch.Tensor:
    """The k x k patches of every pixel of ``x`` [B, C, H, W] ('same' padding): [B*H*W, C*k*k]."""
    b, c, h, w = x.shape
    xp = F.pad(x, (pad, pad, pad, pad))
    s = xp.stride()
    return xp.as_strided((b, h, w, c, k, k), (s[0], s[2], s[3], s[1], s[2], s[3])).reshape(b * h * w, c * k * k)


def _pool_backward(dp: torch.Tensor, z: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    return _aten.max_pool2d_with_indices_backward(dp, z, [2, 2], [2, 2], [0, 0], [1, 1], False, idx)


def cnn_sgd_step(model: nn.Module, lr: float) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Return ``step(x, y) -> loss``: one SGD step of :class:`~hamrah.models.zoo.CNN` on a batch of
    images ``x`` and class ids ``y`` (no padding targets), updating the model's parameters in place."""
    c1, c2, d1, d2 = model.conv1, model.conv2, model.fc1, model.fc2
    k1, pad1, pad2 = c1.kernel_size[0], c1.padding[0], c2.padding[0]
    w1 = c1.weight.view(c1.out_channels, -1)  # [32, C*k*k], shares storage with the parameter

    @torch.no_grad()
    def step(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        cols = _patches(x, k1, pad1)
        z1 = torch.addmm(c1.bias, cols, w1.t()).view(b, h, w, -1).permute(0, 3, 1, 2)  # channels-last
        p1, i1 = F.max_pool2d_with_indices(z1, 2)
        a1 = p1.relu_()
        z2 = F.conv2d(a1, c2.weight, c2.bias, padding=pad2)
        p2, i2 = F.max_pool2d_with_indices(z2, 2)
        a2 = p2.relu_().contiguous().flatten(1)  # NCHW order, as the module's flatten
        h1 = torch.addmm(d1.bias.unsqueeze(1), d1.weight, a2.t()).t().relu_()
        loss, dz = _xent_grad(torch.addmm(d2.bias, h1, d2.weight.t()), y)

        dh1 = _dense_backward(dz, h1, d2.weight, d2.bias, lr, relu_input=True)
        da2 = _dense_backward(dh1, a2, d1.weight, d1.bias, lr, relu_input=True)
        dz2 = _pool_backward(da2.view(p2.shape).contiguous(memory_format=_CL), z2, i2)
        da1 = _aten.threshold_backward(_conv_backward(dz2, a1, c2.weight, c2.bias, lr, pad2), a1, 0)
        dz1 = _pool_backward(da1, z1, i1).permute(0, 2, 3, 1).reshape(cols.shape[0], -1)
        _dense_backward(dz1, cols, w1, c1.bias, lr, relu_input=False)
        return loss

    return step
