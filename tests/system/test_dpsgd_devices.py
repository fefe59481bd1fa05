"""DP-SGD on real devices: the plan carries DP-SGD's settings and each device's ledger settings; a
device charges its own Example Store's ledger before an update leaves it and refuses a task that
would take its examples past the plan's target or its own cap."""

from __future__ import annotations

import asyncio

import pytest
import torch
from tests.system.harness import make_setup, records, run_system

from hamrah.algorithms import build
from hamrah.algorithms.dpsgd import example_epsilon, privacy_events
from hamrah.core.errors import BudgetExhausted, ProtocolError
from hamrah.data.federated import ArrayData
from hamrah.device.compute import TaskJob
from hamrah.device.store import ExampleStore, import_partition
from hamrah.experiments.config import from_dict
from hamrah.models import ModelSpec
from hamrah.transport.plan import EXAMPLE_PRIVACY_KEY, Plan

ALGORITHM = {"name": "fedavg", "client_fraction": 0.3, "local_epochs": 1, "batch_size": 50, "lr": 0.1}


@pytest.mark.slow
@pytest.mark.parametrize(
    "secure", [None, {"variant": "secagg", "clip": 0.5, "input_bits": 20}], ids=["plain", "secagg"]
)
def test_devices_train_with_dpsgd_over_grpc_and_keep_their_own_ledgers(tmp_path, secure):
    exp = from_dict(
        {
            "data": {"dataset": "mnist", "partition": "iid", "num_clients": 20},
            "model": {"name": "logreg"},
            "algorithm": ALGORITHM,
            "privacy": {"mode": "dpsgd", "clip": 1.0, "noise_multiplier": 1.0, "target_epsilon": 50.0},
            "run": {"rounds": 2, "seed": 0},
            **({} if secure is None else {"secure_aggregation": secure}),
        }
    )
    setup, stores, tokens = make_setup(tmp_path, exp, devices=6, goal_count=6, over_selection=1.0, min_reports=5)
    assert setup.plan_extra == {EXAMPLE_PRIVACY_KEY: {"delta": 1e-5, "target_epsilon": 50.0, "accountant": "rdp"}}
    assert setup.algorithm.local_plan().example_dp is not None  # what the plan's algorithm builds on a device
    server, summary, _ = asyncio.run(run_system(setup, tmp_path / "state", stores, tokens))
    recs = records(tmp_path / "state", setup)
    assert summary["rounds_committed"] == 2 and all(r["reported"] >= 5 for r in recs)
    plan = setup.algorithm.local_plan()
    trained, spent_most = 0, 0.0
    for path in stores:
        with ExampleStore(path) as store:
            spent = store.privacy_spent()
            n = store.count()
        rounds = len(spent)  # one entry per training
        trained += rounds
        assert spent == [(s.to_dict(), k) for s, k in privacy_events(plan, n)] * rounds
        if rounds:
            spent_most = max(spent_most, example_epsilon(plan, n, 1e-5, rounds))
    assert trained >= 10  # 5 or 6 devices in each of 2 rounds
    # each store's epsilon (a function of its example count) stays on the device: the server records none
    assert spent_most > 0 and all("epsilon" not in r and "privacy_unit" not in r for r in recs)


def _job(tmp_path, cap=None, target=3.0) -> tuple[TaskJob, Plan, dict]:
    g = torch.Generator().manual_seed(0)
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "store.db"
    import_partition(path, ArrayData(torch.rand(30, 784, generator=g), torch.randint(0, 10, (30,), generator=g)))
    hp = {**{k: v for k, v in ALGORITHM.items() if k != "client_fraction"}, "batch_size": 10}
    algorithm = {**hp, "client_fraction": 0.3, "dp_clip": 1.0, "dp_noise_multiplier": 1.0}
    extra = {EXAMPLE_PRIVACY_KEY: {"delta": 1e-5, "target_epsilon": target, "accountant": "rdp"}}
    spec = ModelSpec("logreg", (784,), 10)
    plan = Plan("train", 1, algorithm, spec, 0, None, extra, None, 5)
    params = {k: v.detach() for k, v in spec.build().named_parameters()}
    return TaskJob(ExampleStore(path), None, 7, {}, cap), plan, params


def test_a_device_refuses_the_training_that_would_pass_its_budget(tmp_path):
    local = build(**_job(tmp_path / "probe")[1].algorithm).local_plan()  # (the probe's store is left to gc)
    one, two = example_epsilon(local, 30, 1e-5), example_epsilon(local, 30, 1e-5, 2)
    job, plan, params = _job(tmp_path, target=two * 1.0001)  # the plan's target allows two trainings
    allowed = 2
    for _ in range(allowed):
        job.run(plan, params, None)
    assert len(job.store.privacy_spent()) == allowed
    with pytest.raises(BudgetExhausted, match=r"DP-SGD: one more training would take this device's examples"):
        job.run(plan, params, None)
    assert len(job.store.privacy_spent()) == allowed  # nothing charged for a refused task
    job.store.close()
    capped, plan, params = _job(tmp_path / "capped", cap=one * 1.01, target=two * 2)  # its own cap is stricter
    capped.run(plan, params, None)
    with pytest.raises(BudgetExhausted, match=r"past the cap"):
        capped.run(plan, params, None)
    capped.store.close()


@pytest.mark.parametrize(
    "entry, match",
    [
        (None, "without extra.example_privacy"),
        ({"delta": 2.0}, r"example_privacy.delta = 2.0: expected a number in \(0, 1\)"),
        ({"delta": 1e-5, "target_epsilon": -1}, "target_epsilon = -1: expected a positive number"),
        ({"delta": 1e-5, "accountant": "moments"}, "accountant = 'moments': expected rdp or pld"),
    ],
)
def test_a_dpsgd_plan_without_valid_ledger_settings_is_refused(tmp_path, entry, match):
    job, plan, params = _job(tmp_path)
    extra = {} if entry is None else {EXAMPLE_PRIVACY_KEY: entry}
    bad = Plan(plan.kind, plan.round, plan.algorithm, plan.model, 0, None, extra, None, 5)
    with pytest.raises(ProtocolError, match=match):
        job.run(bad, params, None)
    assert job.store.privacy_spent() == []
    job.store.close()


def test_a_corrupt_ledger_is_refused_not_reset(tmp_path):
    job, plan, params = _job(tmp_path)
    job.store._db.execute("INSERT OR REPLACE INTO runtime VALUES ('privacy_spent', 'not json')")
    with pytest.raises(Exception, match="the privacy ledger is corrupt"):
        job.run(plan, params, None)
    job.store.close()


def test_a_reported_epsilon_outside_its_range_is_refused():
    from hamrah.server.influence import check_metrics
    from hamrah.transport.plan import DP_EPSILON

    assert check_metrics({DP_EPSILON: 3.5}) == {DP_EPSILON: 3.5}
    with pytest.raises(ProtocolError, match=r"metrics: dp_epsilon = -1.0, expected a finite number in \[0.0, inf\]"):
        check_metrics({DP_EPSILON: -1.0})
