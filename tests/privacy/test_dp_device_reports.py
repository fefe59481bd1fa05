"""What a device's report tells the server beside its (noised) update, per privacy mode.

DP-SGD, local DP and distributed DP state a guarantee that holds against the server too (docs/dp.md,
"Trust model"). Before the fix a device sent, un-noised with every report, its training loss and the
loss and accuracy of its freshly trained model on its own examples (and, in a personalized run, scores
on held-out examples): exactly the per-device losses a membership-inference attack reads, outside the
mechanism the epsilon accounts for. Now no metric goes with such a report (not even the store's DP-SGD
epsilon, a function of its example count); central DP (a trusted server) keeps the metrics, and the
server records no made-up loss.
"""

from __future__ import annotations

import pytest
import torch

from hamrah.data.federated import ArrayData
from hamrah.device.compute import PRIVATE_MODE_METRICS, TaskJob
from hamrah.device.store import ExampleStore, import_partition
from hamrah.models import ModelSpec
from hamrah.pipeline import resolve_pipeline
from hamrah.pipeline.spec import PLAN_KEY
from hamrah.server.reports import reported_loss
from hamrah.transport.plan import DP_EPSILON, EXAMPLE_PRIVACY_KEY, PERSONAL_KEY, Plan

HP = {"name": "fedavg", "client_fraction": 0.3, "local_epochs": 1, "batch_size": 10, "lr": 0.1}
SPEC = ModelSpec("logreg", (784,), 10)


def _run(tmp_path, algorithm: dict, extra: dict) -> tuple[int, dict]:
    g = torch.Generator().manual_seed(0)
    path = tmp_path / "store.db"
    import_partition(path, ArrayData(torch.rand(30, 784, generator=g), torch.randint(0, 10, (30,), generator=g)))
    params = {k: v.detach() for k, v in SPEC.build().named_parameters()}
    job = TaskJob(ExampleStore(path), None, 7, {}, None)
    try:
        n, metrics, _, _ = job.run(Plan("train", 1, algorithm, SPEC, 0, None, extra, None, 5), params, None)
    finally:
        job.store.close()
    return n, metrics


def _pipeline(privacy: dict) -> dict:
    spec = resolve_pipeline(None, privacy, 100, 10, 5)
    assert spec is not None
    return {PLAN_KEY: spec.to_json()}


PERSONAL = {PERSONAL_KEY: {"holdout": 0.2}}


@pytest.mark.parametrize(
    "algorithm, extra",
    [
        (
            {**HP, "dp_clip": 1.0, "dp_noise_multiplier": 1.0},
            {EXAMPLE_PRIVACY_KEY: {"delta": 1e-5, "target_epsilon": 50.0, "accountant": "rdp"}, **PERSONAL},
        ),
        (HP, {**_pipeline({"mode": "local", "clip": 1.0, "noise_multiplier": 1.0}), **PERSONAL}),
    ],
    ids=["dpsgd", "local"],
)
def test_a_device_sends_no_metric_of_its_examples_when_the_server_is_not_trusted(tmp_path, algorithm, extra):
    n, metrics = _run(tmp_path, algorithm, extra)
    # DP-SGD and local DP weigh every report 1: the report says 1 example, not the store's 24
    assert n == 1
    assert set(metrics) <= set(PRIVATE_MODE_METRICS)
    assert "train_loss" not in metrics and "accuracy" not in metrics and "personal_accuracy" not in metrics
    assert DP_EPSILON not in metrics  # DP-SGD: the store's epsilon is a function of n_k; it stays on the device
    assert reported_loss(metrics, 1.0) == {}  # the server adds no loss of 0 for it


def test_central_dp_keeps_the_metrics_for_the_trusted_server(tmp_path):
    n, metrics = _run(tmp_path, HP, _pipeline({"mode": "central", "clip": 1.0, "noise_multiplier": 1.0}))
    assert n == 30
    assert {"train_loss", "loss", "accuracy"} <= set(metrics)
    assert reported_loss(metrics, 2.0)["train_loss"].value == pytest.approx(metrics["train_loss"])
