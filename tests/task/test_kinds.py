"""The task contract and its four kinds: losses, metrics that merge like their reduction, AUC, digests."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import roc_auc_score
from torch import nn

import hamrah
from hamrah.core.errors import ConfigError
from hamrah.core.metrics import ScoreHistogram, Weighted, merge_metrics, metric_values
from hamrah.task import (
    PAD_LABEL,
    BinaryTask,
    ClassificationTask,
    NextTokenTask,
    RegressionTask,
    Task,
    check_task,
    uses_builtin_loss,
)


def _merged(task, output, target, parts):
    """Metrics of the whole batch, and merged over ``parts`` pieces (as clients or batches would)."""
    pieces = {}
    for ix in np.array_split(np.arange(len(target)), parts):
        pieces = merge_metrics(pieces, task.metrics(output[ix], target[ix]))
    return metric_values(task.metrics(output, target)), metric_values(pieces)


def test_top_level_exports_the_task_api():
    assert hamrah.Task is Task and hamrah.BinaryTask is BinaryTask and "RegressionTask" in hamrah.__all__


def test_classification_metrics_merge_over_pieces_and_skip_padding():
    torch.manual_seed(0)
    out, y = torch.randn(50, 5), torch.randint(0, 5, (50,))
    y[::7] = PAD_LABEL

    class Top(ClassificationTask):
        top_k = 3

    whole, merged = _merged(Top(), out, y, 4)
    valid = y != PAD_LABEL
    assert whole["accuracy"] == pytest.approx(float((out.argmax(1) == y)[valid].float().mean()))
    assert whole["top3"] >= whole["accuracy"]
    assert whole == pytest.approx(merged)
    assert Top().loss(out, y) == pytest.approx(whole["loss"], rel=1e-5)


def test_regression_mse_mae():
    out, y = torch.tensor([[1.0], [2.0], [4.0]]), torch.tensor([1.0, 3.0, 2.0])
    m = metric_values(RegressionTask().metrics(out, y))
    assert m["mse"] == pytest.approx(5 / 3) and m["mae"] == pytest.approx(1.0) and m["loss"] == m["mse"]
    assert float(RegressionTask().loss(out, y)) == pytest.approx(5 / 3)


def test_next_token_perplexity_is_exp_of_the_token_mean_loss():
    torch.manual_seed(1)
    out, y = torch.randn(4, 6, 9), torch.randint(0, 9, (4, 6))
    y[:, 4:] = PAD_LABEL
    whole, merged = _merged(NextTokenTask(), out, y, 3)
    assert whole["perplexity"] == pytest.approx(math.exp(whole["loss"]))
    assert merged["perplexity"] == pytest.approx(whole["perplexity"])


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.tuples(st.floats(0, 1), st.booleans()), min_size=2, max_size=200),
    st.integers(1, 5),
)
def test_auc_from_summed_histograms_differs_from_sklearn_only_by_ties_inside_a_bin(pairs, parts):
    scores = np.array([s for s, _ in pairs])
    labels = np.array([p for _, p in pairs])
    if labels.all() or not labels.any():
        assert math.isnan(ScoreHistogram.of(scores, labels).value)
        return
    merged = None
    for ix in np.array_split(np.arange(len(scores)), parts):
        h = ScoreHistogram.of(scores[ix], labels[ix], bins=1000)
        merged = h if merged is None else merged + h
    exact = roc_auc_score(labels, scores)
    bins = np.minimum((scores * 1000).astype(int), 999)
    same_bin = (bins[labels][:, None] == bins[~labels][None, :]).mean()  # pos-neg pairs sharing a bin
    assert abs(merged.value - exact) <= same_bin / 2 + 1e-9


def test_binary_task_auc_matches_sklearn_on_spread_scores():
    rng = np.random.default_rng(0)
    y = torch.from_numpy(rng.integers(0, 2, 2000))
    logits = torch.from_numpy(rng.normal(size=(2000, 2))).float()
    logits[:, 1] += y.float()  # informative
    m = BinaryTask().metrics(logits, y)
    exact = roc_auc_score(y.numpy(), torch.softmax(logits, 1)[:, 1].numpy())
    assert m["auc"].value == pytest.approx(exact, abs=1e-3)
    with pytest.raises(ConfigError, match="cannot merge"):
        merge_metrics({"auc": m["auc"]}, {"auc": Weighted(1.0, 1.0)})


def test_builtin_loss_detection():
    assert uses_builtin_loss(ClassificationTask()) and uses_builtin_loss(BinaryTask())
    assert uses_builtin_loss(NextTokenTask()) and not uses_builtin_loss(RegressionTask())


class _Complete(ClassificationTask):
    def model(self):
        return nn.Linear(2, 2)

    def data(self):
        raise NotImplementedError


def test_check_task_refuses_non_tasks_and_missing_methods():
    assert check_task(_Complete(), "x") is not None
    with pytest.raises(ConfigError, match="expected a hamrah.Task"):
        check_task(object(), "task.entry")

    class NoData(ClassificationTask):
        def model(self):
            return nn.Linear(2, 2)

    with pytest.raises(ConfigError, match=r"does not define data\(\)"):
        check_task(NoData(), "task.entry")


def test_digest_names_the_version_and_changes_with_it():
    class V2(_Complete):
        version = "2"

    a, b = _Complete().digest(), V2().digest()
    assert a.startswith("1-") and b.startswith("2-") and a[2:] == b[2:]  # same module source
    assert a == _Complete().digest()


class _Sized(_Complete):
    def __init__(self, hidden: int = 8, dropout: float = 0.0, layers: tuple = (1, 2)):
        self.hidden, self.dropout, self.layers = hidden, dropout, layers
        self.cache = object()  # not a setting: left out of the digest


@given(
    st.integers(1, 512),
    st.floats(0, 1, allow_nan=False),
    st.integers(1, 512),
    st.floats(0, 1, allow_nan=False),
)
def test_digest_changes_with_the_task_s_keyword_arguments(h1, d1, h2, d2):
    """A device built with other [task] kwargs (another model size) has another digest, so the plan refuses it."""
    a, b = _Sized(h1, d1), _Sized(h2, d2)
    assert (a.digest() == b.digest()) == ((h1, d1) == (h2, d2))
    assert a.digest() == _Sized(h1, d1).digest()  # a fresh object (another cache) with the same arguments
