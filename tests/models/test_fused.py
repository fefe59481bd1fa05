"""The CNN's hand-written SGD step computes what the autograd loop computes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hamrah.algorithms.base import LocalSGD
from hamrah.algorithms.local import train_local
from hamrah.core.params import max_abs_diff
from hamrah.data import ArrayData
from hamrah.models import CNN


def _identity(names, params, grads):  # any transform sends train_local down the autograd path
    return grads


def _train(model, start, data, transforms, batch):
    return train_local(model, start, data, LocalSGD(2, batch, 0.05), np.random.default_rng(3), transforms=transforms)


@pytest.mark.parametrize("channels,size,batch", [(1, 28, 10), (3, 32, 7), (1, 28, None)])
def test_cnn_fused_step_matches_autograd(channels, size, batch):
    torch.manual_seed(0)
    data = ArrayData(torch.rand(41, channels, size, size), torch.randint(0, 10, (41,)))  # a last batch of 1 or 6
    model = CNN(channels, 10, size)
    start = {k: v.detach().clone() for k, v in model.named_parameters()}
    fused = _train(model, start, data, (), batch)
    reference = _train(model, start, data, (_identity,), batch)
    assert fused.steps == reference.steps == (10 if batch == 10 else 12 if batch == 7 else 2)
    assert fused.train_loss == pytest.approx(reference.train_loss, rel=1e-5)
    assert max_abs_diff(fused.params, reference.params) < 1e-5
    assert max_abs_diff(reference.params, start) > 1e-3  # training moved the weights


def test_cnn_forward_equals_the_plain_nchw_conv_relu_pool_order():
    torch.manual_seed(0)
    model, x = CNN(), torch.randn(4, 1, 28, 28)
    F = torch.nn.functional
    with torch.no_grad():
        h = F.max_pool2d(F.relu(model.conv1(x)), 2)
        h = F.max_pool2d(F.relu(model.conv2(h)), 2)
        expected = model.fc2(F.relu(model.fc1(h.flatten(1))))
        got = model(x)
    assert got.shape == (4, 10)
    assert torch.allclose(got, expected, atol=1e-5)
