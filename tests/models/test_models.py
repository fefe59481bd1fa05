"""Reference models: exact parameter counts, output shapes, and batched_forward == per-client forward."""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call

from hamrah.core.errors import ConfigError
from hamrah.core.params import num_parameters
from hamrah.data import ArrayData, Dataset
from hamrah.models import CNN, MODELS, CharLSTM, LogReg, TwoNN, build_model


def _count(model: torch.nn.Module) -> int:
    return num_parameters(dict(model.named_parameters()))


def _image_dataset(n: int = 8, size: int = 28, classes: int = 10) -> Dataset:
    d = ArrayData(torch.rand(n, 1, size, size), torch.randint(0, classes, (n,)))
    return Dataset("fake_images", d, d, num_classes=classes)


def _sequence_dataset(n: int = 8, t: int = 10, vocab: int = 82) -> Dataset:
    x = torch.randint(1, vocab, (n, t))
    d = ArrayData(x, torch.roll(x, -1, 1))
    return Dataset("fake_text", d, d, num_classes=vocab, ignore_index=0)


def test_parameter_counts():
    assert _count(TwoNN()) == 199_210
    assert _count(CNN()) == 1_663_370
    assert _count(LogReg()) == 7_850
    embed = 82 * 8
    layer1 = 4 * 256 * (8 + 256) + 2 * 4 * 256
    layer2 = 4 * 256 * (256 + 256) + 2 * 4 * 256
    head = 256 * 82 + 82
    assert embed + layer1 + layer2 + head == 820_450
    assert _count(CharLSTM(vocab_size=82)) == embed + layer1 + layer2 + head


def test_build_model_counts_on_mnist_shaped_data():
    ds = _image_dataset()
    assert _count(build_model("2nn", ds)) == 199_210
    assert _count(build_model("cnn", ds)) == 1_663_370
    assert _count(build_model("logreg", ds)) == 7_850
    assert _count(build_model("char_lstm", _sequence_dataset())) == 820_450
    assert set(MODELS) == {"2nn", "cnn", "char_lstm", "logreg"}


def test_output_shapes():
    x = torch.rand(5, 1, 28, 28)
    assert TwoNN()(x).shape == (5, 10)
    assert CNN()(x).shape == (5, 10)
    assert LogReg()(x).shape == (5, 10)
    assert CharLSTM(82)(torch.randint(0, 82, (3, 7))).shape == (3, 7, 82)
    # Other image sizes / class counts follow the data set.
    ds = _image_dataset(size=12, classes=62)
    assert build_model("cnn", ds)(ds.train.x).shape == (8, 62)
    assert build_model("2nn", ds)(ds.train.x).shape == (8, 62)


def _per_client_params(model: torch.nn.Module, k: int, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        name: p.detach().unsqueeze(0) + 0.05 * torch.randn((k, *p.shape), generator=g)
        for name, p in model.named_parameters()
    }


@pytest.mark.parametrize("cls", [TwoNN, CNN, LogReg])
def test_batched_forward_matches_forward(cls):
    torch.manual_seed(0)
    model = cls()
    k, b = 3, 4
    stacked = _per_client_params(model, k, seed=1)
    x = torch.rand(k, b, 1, 28, 28)
    with torch.no_grad():
        out = model.batched_forward(stacked, x)
        assert out.shape == (k, b, 10)
        for c in range(k):
            ref = functional_call(model, {n: v[c] for n, v in stacked.items()}, (x[c],))
            torch.testing.assert_close(out[c], ref, atol=1e-5, rtol=1e-5)
        # The clients really differ, so a mix-up of client slices would be caught.
        assert (out[0] - out[1]).abs().max() > 1e-3


def test_char_lstm_has_no_batched_form():
    assert not callable(getattr(CharLSTM(10), "batched_forward", None))


def test_build_model_refuses_mismatches():
    with pytest.raises(ConfigError, match="char_lstm"):
        build_model("char_lstm", _image_dataset())
    for name in ("cnn", "2nn", "logreg"):
        with pytest.raises(ConfigError, match=name):
            build_model(name, _sequence_dataset())
    with pytest.raises(ConfigError, match="resnet"):
        build_model("resnet", _image_dataset())
    flat = ArrayData(torch.rand(4, 20), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ConfigError, match="cnn"):
        build_model("cnn", Dataset("flat", flat, flat, num_classes=2))
