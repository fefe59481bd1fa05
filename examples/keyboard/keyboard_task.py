"""Mobile-keyboard next-word prediction: every speaking role of Shakespeare's plays is one phone.

The roles are those of the federated Shakespeare benchmark (McMahan et al. 2017, LEAF): the plays of Project
Gutenberg's complete works (`data/shakespeare/pg100.txt.gz`), one client per (play, role) with at least 3
lines, the first 80% of each role's lines for training and the rest for test (`hamrah.data.split_into_plays`).
Words are lower-cased runs of letters and apostrophes; the vocabulary is the `vocab` most frequent training
words, every other word is out-of-vocabulary (OOV). A role's lines are cut into windows of `length` words; the
model predicts each next word. An OOV word is an input but never a target (as TFF's Stack Overflow next-word
accuracy without OOV): accuracy and top-3 are over in-vocabulary next words.
"""

from __future__ import annotations

import gzip
import re
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from torch import nn

import hamrah
from hamrah.data import ArrayData, Dataset, split_into_plays

TEXT = Path(__file__).resolve().parents[2] / "data" / "shakespeare" / "pg100.txt.gz"
PAD, OOV = 0, 1  # input ids; word i of the vocabulary is id i + 2
WORD = re.compile(r"[a-z]+(?:'[a-z]+)*")


def roles(min_lines: int = 3) -> list[tuple[str, list[str], list[str]]]:
    """Return (play:role, training lines, test lines) of every role with at least ``min_lines`` lines."""
    with gzip.open(TEXT, "rt", encoding="utf-8-sig") as f:
        plays = split_into_plays(f.read())
    out = []
    for title, parts in plays:
        for role, lines in parts.items():
            if len(lines) >= min_lines:
                k = min(max(4 * len(lines) // 5, 1), len(lines) - 1)
                out.append((f"{title}:{role}", lines[:k], lines[k:]))
    return out


def windows(words: list[int], length: int) -> tuple[np.ndarray, np.ndarray]:
    """Cut ``words`` into windows: inputs ``[m, length]`` and next-word targets (-100: none)."""
    m = max(1, -(-(len(words) - 1) // length))
    ids = np.full(m * length + 1, PAD, np.int64)
    ids[: len(words)] = words
    x = ids[:-1].reshape(m, length)
    y = ids[1:].reshape(m, length).copy()
    y[y <= OOV] = hamrah.PAD_LABEL  # padding and OOV are no targets
    return x, y


class NextWord(nn.Module):
    """Embedding -> one-layer LSTM -> a projection back to the embedding, scored against every word's embedding
    (tied input and output embeddings: half the parameters of a separate output layer, and half its work)."""

    def __init__(self, vocab: int, embed: int, hidden: int):
        super().__init__()
        self.embed = nn.Embedding(vocab, embed, padding_idx=PAD)
        nn.init.uniform_(self.embed.weight, -0.1, 0.1)  # small: the logits start near zero (N(0, 1) starts at loss ~9)
        self.lstm = nn.LSTM(embed, hidden, batch_first=True)
        self.project = nn.Linear(hidden, embed)
        self.bias = nn.Parameter(torch.zeros(vocab))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(self.lstm(self.embed(x))[0]) @ self.embed.weight.T + self.bias


class Keyboard(hamrah.NextTokenTask):
    name = "keyboard"
    top_k = 3

    def __init__(self, vocab: int = 5000, embed: int = 32, hidden: int = 64, length: int = 20, test_every: int = 1):
        self.vocab, self.embed, self.hidden, self.length, self.test_every = vocab, embed, hidden, length, test_every

    def model(self) -> nn.Module:
        return NextWord(self.vocab + 2, self.embed, self.hidden)

    def data(self) -> Dataset:
        parts = [
            (name, [WORD.findall(s.lower()) for s in tr], [WORD.findall(s.lower()) for s in te])
            for name, tr, te in roles()
        ]
        counts = Counter(w for _, tr, _ in parts for line in tr for w in line)
        ids = {w: i + 2 for i, (w, _) in enumerate(counts.most_common(self.vocab))}
        split = {"train": ([], [], []), "test": ([], [], [])}
        for g, (_, tr, te) in enumerate(parts):
            for key, lines in (("train", tr), ("test", te)):
                x, y = windows([ids.get(w, OOV) for line in lines for w in line], self.length)
                for dest, v in zip(split[key], (x, y, np.full(len(x), g))):
                    dest.append(v)
        (xtr, ytr, gtr), (xte, yte, _) = ([np.concatenate(v) for v in s] for s in split.values())
        keep = slice(None, None, self.test_every)  # every n-th test window: a faster score of the same roles
        train = ArrayData(torch.from_numpy(xtr), torch.from_numpy(ytr))
        test = ArrayData(torch.from_numpy(xte[keep]), torch.from_numpy(yte[keep]))
        names = tuple(name for name, _, _ in parts)
        return Dataset("keyboard", train, test, self.vocab + 2, gtr, names, ignore_index=hamrah.PAD_LABEL)
