"""On-device DP-SGD: per-example gradients, clipping, noise, equivalence with plain SGD, accounting."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hamrah.algorithms import LocalSGD, train_local
from hamrah.algorithms.base import ExampleDP
from hamrah.algorithms.dpsgd import clip_per_example, example_epsilon, per_example_grads, privacy_events
from hamrah.algorithms.local import masked_mean_loss
from hamrah.core.errors import ConfigError
from hamrah.data.federated import ArrayData
from hamrah.models.zoo import CNN, LogReg, TwoNN
from hamrah.privacy import RoundSpec, epsilon_of


def _data(n: int = 24, image: bool = False) -> ArrayData:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 1, 28, 28, generator=g) if image else torch.randn(n, 784, generator=g)
    return ArrayData(x, torch.randint(0, 10, (n,), generator=g))


def _params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_parameters()}


@pytest.mark.parametrize("make, image", [(LogReg, False), (TwoNN, False), (CNN, True)])
def test_per_example_gradients_equal_one_at_a_time(make, image):
    torch.manual_seed(0)
    model, data = make(), _data(4, image)
    params = _params(model)
    grads, losses = per_example_grads(model, params, data.x, data.y)
    for i in range(len(data)):
        model.zero_grad()
        loss = masked_mean_loss(model(data.x[i : i + 1]).unsqueeze(0), data.y[i : i + 1].unsqueeze(0))[0]
        loss.backward()
        assert float(losses[i]) == pytest.approx(float(loss.detach()), rel=1e-5)
        for k, p in model.named_parameters():
            assert torch.allclose(grads[k][i], p.grad, atol=1e-6), (k, i)


def test_per_example_clipping_bounds_each_contribution():
    g = {"w": torch.tensor([[3.0, 4.0], [0.3, 0.4]]), "b": torch.zeros(2, 1)}  # norms 5 and 0.5
    summed, norms = clip_per_example(g, 1.0)
    assert norms.tolist() == pytest.approx([5.0, 0.5])
    assert summed["w"].tolist() == pytest.approx([0.6 + 0.3, 0.8 + 0.4])


@pytest.mark.parametrize("make", [LogReg, TwoNN])
def test_no_noise_and_huge_clip_equals_plain_sgd(make):
    torch.manual_seed(0)
    model, data = make(), _data(24)
    params = _params(model)
    plain = train_local(model, params, data, LocalSGD(2, 5, 0.1), np.random.default_rng(7))
    dp = train_local(
        model,
        params,
        data,
        LocalSGD(2, 5, 0.1, example_dp=ExampleDP(1e30, 0.0, poisson=False)),
        np.random.default_rng(7),
    )
    for k in params:
        assert torch.allclose(plain.params[k], dp.params[k], atol=1e-6)
    assert dp.train_loss == pytest.approx(plain.train_loss, rel=1e-5)


def test_noise_is_seeded_by_the_client_rng():
    torch.manual_seed(0)
    model, data = LogReg(), _data(20)
    params = _params(model)
    plan = LocalSGD(1, 5, 0.1, example_dp=ExampleDP(1.0, 1.0))
    a = train_local(model, params, data, plan, np.random.default_rng(3))
    b = train_local(model, params, data, plan, np.random.default_rng(3))
    c = train_local(model, params, data, plan, np.random.default_rng(4))
    assert all(torch.equal(a.params[k], b.params[k]) for k in params)
    assert not torch.equal(a.params["fc.weight"], c.params["fc.weight"])


def test_step_noise_has_std_z_s_over_b():
    # Zero data gradient contribution: lr = 1, one Poisson step on examples with all-padding targets.
    torch.manual_seed(0)
    model = LogReg()
    data = ArrayData(torch.zeros(40, 784), torch.full((40,), -100))
    params = _params(model)
    out = train_local(
        model,
        params,
        data,
        LocalSGD(1, 40, 1.0, example_dp=ExampleDP(2.0, 1.5, poisson=False)),
        np.random.default_rng(0),
        ignore_index=-100,
    )
    residual = out.params["fc.weight"] - params["fc.weight"]
    std = 1.5 * 2.0 / 40
    assert abs(float(residual.std()) / std - 1) < 6 / np.sqrt(2 * residual.numel())


def test_accounting_of_a_plan():
    poisson = LocalSGD(2, 10, 0.1, example_dp=ExampleDP(1.0, 1.1))
    assert privacy_events(poisson, 600) == [(RoundSpec.poisson(1.1, 10 / 600), 120)]
    shuffled = LocalSGD(2, 10, 0.1, example_dp=ExampleDP(1.0, 1.1, poisson=False))
    assert privacy_events(shuffled, 600) == [(RoundSpec.unsampled(1.1), 2)]
    steps = LocalSGD(1, 10, 0.1, num_steps=75, example_dp=ExampleDP(1.0, 1.1, poisson=False))
    assert privacy_events(steps, 600) == [(RoundSpec.unsampled(1.1), 2)]  # 75 steps begin a second epoch
    full = LocalSGD(1, None, 1.0, example_dp=ExampleDP(1.0, 1.1))  # FedSGD's full batch: q = 1, one step
    assert privacy_events(full, 600) == [(RoundSpec.poisson(1.1, 1.0), 1)]
    eps = example_epsilon(poisson, 600, 1e-5, participations=3)
    assert eps == pytest.approx(epsilon_of([(RoundSpec.poisson(1.1, 10 / 600), 360)], 1e-5))
    assert eps < example_epsilon(shuffled, 600, 1e-5, participations=3)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(clip=0.0), "privacy.clip"),
        (dict(clip=float("inf")), "privacy.clip"),
        (dict(noise_multiplier=-1.0), "privacy.noise_multiplier"),
        (dict(poisson="yes"), "dp_poisson"),
    ],
)
def test_example_dp_validation(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        ExampleDP(**(dict(clip=1.0, noise_multiplier=1.0) | kwargs))


def test_poisson_batches_on_a_client_smaller_than_b_divide_by_its_size():
    # q = min(1, B/n) = 1: every example is in every batch; without noise the step is plain full-batch GD.
    torch.manual_seed(0)
    model, data = LogReg(), _data(6)
    params = _params(model)
    plain = train_local(model, params, data, LocalSGD(1, None, 0.1), np.random.default_rng(0))
    dp = train_local(
        model, params, data, LocalSGD(1, 50, 0.1, example_dp=ExampleDP(1e30, 0.0)), np.random.default_rng(0)
    )
    for k in params:
        assert torch.allclose(plain.params[k], dp.params[k], atol=1e-6)


def test_a_loss_vmap_cannot_batch_is_refused_with_the_reason():
    from hamrah.task import ClassificationTask

    class ItemLoss(ClassificationTask):
        name = "item_loss"

        def model(self):
            return LogReg()

        def data(self):
            raise NotImplementedError

        def loss(self, output, target):
            scale = float(output.sum().item() > 0)  # a Python number from a tensor: vmap cannot batch it
            return super().loss(output, target) * (1 + scale)

    torch.manual_seed(0)
    model, data = LogReg(), _data(10)
    with pytest.raises(ConfigError, match=r"task 'item_loss' cannot be computed per example under torch.func.vmap"):
        train_local(
            model,
            _params(model),
            data,
            LocalSGD(1, 5, 0.1, example_dp=ExampleDP(1.0, 1.0)),
            np.random.default_rng(0),
            task=ItemLoss(),
        )
