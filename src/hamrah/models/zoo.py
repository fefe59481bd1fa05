"""Reference models of McMahan et al. 2017, plus multinomial logistic regression.

Models that can train many clients at once define ``batched_forward(params, x)``: ``params`` holds
each parameter stacked along a leading client dimension ``K`` and ``x`` is ``[K, B, ...]``; it must
compute exactly what ``forward`` computes for each client. The simulator uses it to train a whole
cohort in one pass; models without it are trained one client after another. A model may also define
``sgd_step(lr)``, a hand-written plain-SGD step that ``train_local`` runs instead of autograd.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hamrah.core.params import Params
from hamrah.models.fused import cnn_sgd_step


def _linear(params: Params, name: str, x: torch.Tensor) -> torch.Tensor:
    """Per-client linear layer: ``x`` [K, B, in], weight [K, out, in], bias [K, out]."""
    return torch.baddbmm(params[f"{name}.bias"].unsqueeze(1), x, params[f"{name}.weight"].transpose(1, 2))


def _conv_same(params: Params, name: str, x: torch.Tensor, k: int) -> torch.Tensor:
    """Per-client 'same' convolution as one grouped convolution: ``x`` is [B, K*C_in, H, W]."""
    w, b = params[f"{name}.weight"], params[f"{name}.bias"]
    return F.conv2d(x, w.flatten(0, 1), b.flatten(), padding=w.shape[-1] // 2, groups=k)


def _channels_last(t: torch.Tensor) -> torch.Tensor:
    """``t`` in channels-last layout; as is under torch.func transforms (DP-SGD's per-example
    gradients): ``vmap`` cannot change the layout of a batched tensor."""
    if torch._C._functorch.is_functorch_wrapped_tensor(t):
        return t
    return t.contiguous(memory_format=torch.channels_last)


class TwoNN(nn.Module):
    """McMahan et al.'s 2NN: MLP 784-200-200-10 with ReLU (199,210 parameters)."""

    def __init__(self, in_features: int = 784, hidden: int = 200, num_classes: int = 10):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.fc3 = nn.Linear(hidden, num_classes)

    mlp_layers = ("fc1", "fc2", "fc3")  # a plain ReLU MLP: the simulator's fused path applies

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))

    @staticmethod
    def batched_forward(params: Params, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(2)
        x = F.relu(_linear(params, "fc1", x))
        x = F.relu(_linear(params, "fc2", x))
        return _linear(params, "fc3", x)


class CNN(nn.Module):
    """McMahan et al.'s CNN: two 5x5 'same' conv layers (32, 64 channels) each followed by 2x2 max
    pooling, a 512-unit ReLU layer and a softmax output (1,663,370 parameters on MNIST)."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, image_size: int = 28):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 32, 5, padding=2)
        self.conv2 = nn.Conv2d(32, 64, 5, padding=2)
        self.fc1 = nn.Linear(64 * (image_size // 4) ** 2, 512)
        self.fc2 = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Channels-last runs oneDNN's NHWC convolutions and pooling (NCHW pooling is several times slower);
        # a 1-channel input gives an NCHW conv1 output, so convert it. Pooling before ReLU: same values.
        x = F.relu(F.max_pool2d(_channels_last(self.conv1(_channels_last(x))), 2))
        x = F.relu(F.max_pool2d(self.conv2(x), 2))
        return self.fc2(F.relu(self.fc1(x.flatten(1))))

    def sgd_step(self, lr: float):
        """A hand-written plain-SGD step (see :mod:`hamrah.models.fused`)."""
        return cnn_sgd_step(self, lr)

    @staticmethod
    def batched_forward(params: Params, x: torch.Tensor) -> torch.Tensor:
        k, b = x.shape[:2]
        h = x.transpose(0, 1).flatten(1, 2)  # [B, K*C, H, W]: clients become channel groups
        h = F.max_pool2d(F.relu(_conv_same(params, "conv1", h, k)), 2)
        h = F.max_pool2d(F.relu(_conv_same(params, "conv2", h, k)), 2)
        h = h.reshape(b, k, -1).transpose(0, 1)  # [K, B, 64*7*7], same order as flatten(1)
        return _linear(params, "fc2", F.relu(_linear(params, "fc1", h)))


class CharLSTM(nn.Module):
    """McMahan et al.'s character model: 8-dim embedding, 2 LSTM layers of 256 units, a softmax
    over the vocabulary at every position (sequence-to-sequence next-character prediction)."""

    def __init__(self, vocab_size: int, embed_dim: int = 8, hidden: int = 256, layers: int = 2):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed_dim)
        self.lstm = nn.LSTM(embed_dim, hidden, num_layers=layers, batch_first=True)
        self.head = nn.Linear(hidden, vocab_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(self.embed(x))
        return self.head(out)  # [B, T, vocab]


class LogReg(nn.Module):
    """Multinomial logistic regression: one linear layer and a softmax."""

    def __init__(self, in_features: int = 784, num_classes: int = 10):
        super().__init__()
        self.fc = nn.Linear(in_features, num_classes)

    mlp_layers = ("fc",)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))

    @staticmethod
    def batched_forward(params: Params, x: torch.Tensor) -> torch.Tensor:
        return _linear(params, "fc", x.flatten(2))
