"""Attacks: the seeded malicious set, each poisoning by hand, the registry's refusals, the metrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from hamrah.aggregation import build_aggregator
from hamrah.algorithms import ClientResult
from hamrah.attacks import (
    GaussianUpdate,
    LabelFlip,
    LittleIsEnough,
    ModelReplacement,
    PixelBackdoor,
    ScaleUpdate,
    SignFlip,
    attack_success_rate,
    build_attack,
    choose_malicious,
    main_accuracy,
    z_max,
)
from hamrah.core.aggregate import weighted_mean
from hamrah.core.errors import ConfigError
from hamrah.data.federated import ArrayData


def _result(cid, values, n=10):
    return ClientResult(cid, {"w": torch.tensor(values, dtype=torch.float32)}, n, {"train_loss": 0.5})


def test_choose_malicious_is_seeded_and_sized():
    a = choose_malicious(100, 0.2, seed=3)
    assert len(a) == 20 and a == choose_malicious(100, 0.2, seed=3) and a != choose_malicious(100, 0.2, seed=4)
    assert all(0 <= c < 100 for c in a)
    assert choose_malicious(100, 0.0, seed=3) == frozenset()
    with pytest.raises(ConfigError, match=r"malicious_fraction = 1.0: expected a number in \[0, 1\)"):
        choose_malicious(100, 1.0, seed=0)


def test_label_flip_untargeted_and_targeted():
    d = ArrayData(torch.zeros(4, 1), torch.tensor([0, 7, 7, 3]))
    assert LabelFlip().poison(d, None).y.tolist() == [9, 2, 2, 6]
    assert LabelFlip(source=7, target=1).poison(d, None).y.tolist() == [0, 1, 1, 3]
    aimed = LabelFlip(source=7, target=1).success_data(d)
    assert aimed.y.tolist() == [1, 1] and LabelFlip().success_data(d) is None
    assert d.y.tolist() == [0, 7, 7, 3]  # the input is left alone


def test_backdoor_stamps_a_share_and_relabels():
    d = ArrayData(torch.zeros(10, 1, 28, 28), torch.arange(10))
    bd = PixelBackdoor(target=0, fraction=0.3)
    out = bd.poison(d, np.random.default_rng(0))
    stamped = out.x.flatten(1).sum(1) > 0
    assert int(stamped.sum()) == 3 and bool((out.y[stamped] == 0).all())
    assert torch.equal(out.y[~stamped], d.y[~stamped])
    # 4x4 checkerboard, 1 px from the bottom-right corner: 8 white pixels at rows/cols 23..26
    img = out.x[stamped][0, 0]
    assert int((img > 0).sum()) == 8 and float(img[23, 23]) == 1.0 and float(img[23, 24]) == 0.0
    assert float(img[27].sum()) == 0.0 and float(img[:, 27].sum()) == 0.0
    assert torch.equal(bd.poison(d, np.random.default_rng(0)).y, out.y)
    assert float(d.x.sum()) == 0.0
    aimed = bd.success_data(d)
    assert len(aimed) == 9 and bool((aimed.y == 0).all())


def test_sign_flip_scale_keep_the_rest_of_the_result():
    r = _result(4, [1.0, -2.0], n=33)
    (f,) = SignFlip().poison([r], [], None)
    (s,) = ScaleUpdate(5.0).poison([r], [], None)
    assert f.delta["w"].tolist() == [-1.0, 2.0] and s.delta["w"].tolist() == [5.0, -10.0]
    assert (f.client_id, f.num_examples, f.metrics) == (4, 33, {"train_loss": 0.5})


def test_gaussian_update_is_seeded_noise_of_the_given_scale():
    mal = [ClientResult(c, {"w": torch.zeros(50000)}, 10) for c in (1, 2)]
    a = GaussianUpdate(0.5).poison(mal, [], np.random.default_rng(1))
    b = GaussianUpdate(0.5).poison(mal, [], np.random.default_rng(1))
    assert torch.equal(a[0].delta["w"], b[0].delta["w"]) and not torch.equal(a[0].delta["w"], a[1].delta["w"])
    assert abs(float(a[0].delta["w"].std()) - 0.5) < 0.01


def test_z_max_by_hand():
    # n = 10, m = 2: s = floor(6) - 2 = 4, z = Phi^-1(6/10) = 0.2533
    assert z_max(10, 2) == pytest.approx(0.2533, abs=1e-4)
    # n = 50, m = 24: s = 2, z = Phi^-1(0.96) = 1.7507
    assert z_max(50, 24) == pytest.approx(1.7507, abs=1e-4)


def test_little_is_enough_sends_mean_minus_z_std():
    benign = [_result(2, [1.0, 0.0]), _result(3, [3.0, 4.0])]  # mean (2, 2), population std (1, 2)
    mal = [_result(0, [9.0, 9.0]), _result(1, [-9.0, 9.0])]
    out = LittleIsEnough(z=1.5).poison(mal, benign, None)
    assert [r.delta["w"].tolist() for r in out] == [[0.5, -1.0], [0.5, -1.0]]
    auto = LittleIsEnough().poison(mal, benign, None)[0].delta["w"]
    z = z_max(4, 2)
    assert torch.allclose(auto, torch.tensor([2.0 - z, 2.0 - 2 * z]))


def test_little_is_enough_passes_krum_while_a_scaled_update_does_not():
    g = torch.Generator().manual_seed(0)
    benign = [ClientResult(c, {"w": 1.0 + 0.1 * torch.randn(200, generator=g)}, 10) for c in range(2, 15)]
    mal = [ClientResult(c, {"w": 1.0 + 0.1 * torch.randn(200, generator=g)}, 10) for c in range(2)]
    krum = build_aggregator("krum", f=2)
    alie = LittleIsEnough().poison(mal, benign, None)
    scaled = ScaleUpdate(20.0).poison(mal, benign, None)
    pick = krum([r.delta for r in alie + benign], [10] * 15)["w"]
    assert torch.equal(pick, alie[0].delta["w"])  # the crafted update sits in the middle: Krum chooses it
    pick = krum([r.delta for r in scaled + benign], [10] * 15)["w"]
    assert not any(torch.equal(pick, r.delta["w"]) for r in scaled)


def test_model_replacement_replaces_the_weighted_mean():
    benign = [_result(c, [0.01 * c, -0.01 * c], n=20 + c) for c in range(1, 9)]
    backdoored = [_result(0, [3.0, 1.0], n=15)]
    boosted = ModelReplacement().poison(backdoored, benign, None)
    mean = weighted_mean([r.delta for r in boosted + benign], [r.num_examples for r in boosted + benign])["w"]
    benign_part = (
        weighted_mean([r.delta for r in benign], [r.num_examples for r in benign])["w"]
        * sum(r.num_examples for r in benign)
        / (15 + sum(r.num_examples for r in benign))
    )
    assert torch.allclose(mean, torch.tensor([3.0, 1.0]) + benign_part)
    assert ModelReplacement(boost=4.0).poison(backdoored, benign, None)[0].delta["w"].tolist() == [12.0, 4.0]


def test_attack_touches_only_malicious_clients():
    atk = build_attack("backdoor", frozenset({1}), target=0, fraction=1.0)
    d = ArrayData(torch.zeros(3, 1, 28, 28), torch.tensor([4, 5, 6]))
    assert atk.poison_data(0, d, np.random.default_rng(0)) is d
    assert atk.poison_data(1, d, np.random.default_rng(0)).y.tolist() == [0, 0, 0]
    r = [_result(1, [1.0])]
    assert atk.poison_updates(r, [], np.random.default_rng(0)) == r  # no update poisoning
    none = build_attack("none", frozenset({1, 2}))
    assert not none.is_malicious(1)


@pytest.mark.parametrize(
    "name,params,message",
    [
        ("teleport", {}, "unknown attack 'teleport'"),
        ("sign_flip", {"factor": 2.0}, "unknown parameter 'factor'; expected scale"),
        ("backdoor", {}, "missing parameter target"),
        ("backdoor", {"target": 10}, "target = 10: expected a class label in 0..9"),
        ("targeted_flip", {"source": 3, "target": 3}, "source = target = 3"),
        ("scale", {"factor": -1.0}, r"factor = -1.0: expected a number in \(0, inf\)"),
        ("backdoor", {"target": 1, "fraction": 0.0}, r"fraction = 0.0: expected a number in \(0, 1\]"),
        ("backdoor", {"target": 1, "value": float("nan")}, "backdoor: value = nan: expected a number"),
        ("dba", {"target": 1, "value": float("inf")}, "backdoor: value = inf: expected a number"),
        ("backdoor", {"target": 0, "value": "white"}, "backdoor: value = 'white': expected a number"),
        ("label_flip", {"num_classes": 1}, "label_flip: num_classes = 1: expected an integer >= 2"),
        ("label_flip", {"num_classes": 10.0}, "label_flip: num_classes = 10.0: expected an integer >= 2"),
    ],
)
def test_bad_attack_parameters_are_refused(name, params, message):
    with pytest.raises(ConfigError, match=message):
        build_attack(name, frozenset({0}), **params)


class _Always(nn.Module):
    """A model whose bias alone decides the class."""

    def __init__(self, cls: int):
        super().__init__()
        self.b = nn.Parameter(torch.nn.functional.one_hot(torch.tensor(cls), 10).float())

    def forward(self, x):
        return self.b.expand(x.shape[0], 10)


def test_attack_success_rate_and_main_accuracy():
    test = ArrayData(torch.zeros(10, 1, 28, 28), torch.tensor([0, 1, 2, 3, 4, 5, 6, 7, 7, 1]))
    model = _Always(1)
    params = dict(model.named_parameters())
    assert main_accuracy(model, params, test) == pytest.approx(0.2)
    # targeted 7 -> 1: both 7s go to 1
    assert attack_success_rate(model, params, test, build_attack("targeted_flip", frozenset())) == 1.0
    # backdoor to 1: the 8 images not labelled 1 are all called 1
    assert attack_success_rate(model, params, test, build_attack("backdoor", frozenset(), target=1)) == 1.0
    assert attack_success_rate(model, params, test, build_attack("backdoor", frozenset(), target=2)) == 0.0
    assert attack_success_rate(model, params, test, build_attack("sign_flip", frozenset())) is None
