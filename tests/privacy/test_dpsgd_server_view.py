"""What the server sees of a device under DP-SGD alone does not depend on the device's example count.

DP-SGD's epsilon covers one example of a device's data inside its noised update (the sampling rate
B/n_k and the accounting stay on the device). Before the fix the report also said n_k, the update was
weighed by it (one example more or less moved the released model outside the mechanism), each report
carried the store's epsilon (a function of n_k the server can invert) and every check-in said the
store's count. Now a report says 1 example (which also sets its weight in a secure sum), weighs 1 in
the simulator and on the server, carries no metric, and a check-in says only whether the store holds
examples.
"""

from __future__ import annotations

import itertools
import json
from types import SimpleNamespace

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hamrah.data.federated import ArrayData
from hamrah.device.compute import TaskJob
from hamrah.device.config import DeviceConfig
from hamrah.device.eligibility import DeviceState
from hamrah.device.runtime import DeviceRuntime
from hamrah.device.store import ExampleStore, import_partition
from hamrah.models import ModelSpec
from hamrah.privacy.examples import ExampleLedger
from hamrah.server.reports import BoundedReports
from hamrah.simulation.example_privacy import weight_of
from hamrah.transport.plan import EXAMPLE_PRIVACY_KEY, Plan

SPEC = ModelSpec("logreg", (12,), 3)
_SERIAL = itertools.count()
HP = {"name": "fedavg", "client_fraction": 0.3, "local_epochs": 1, "batch_size": 4, "lr": 0.1}
DPSGD = {**HP, "dp_clip": 1.0, "dp_noise_multiplier": 1.0}
LEDGER = {EXAMPLE_PRIVACY_KEY: {"delta": 1e-5, "target_epsilon": None, "accountant": "rdp"}}


def _store(tmp_path, n: int) -> ExampleStore:
    g = torch.Generator().manual_seed(n)
    path = tmp_path / f"store{next(_SERIAL)}.db"  # hypothesis reruns the test in one tmp_path
    import_partition(path, ArrayData(torch.rand(n, 12, generator=g), torch.randint(0, 3, (n,), generator=g)))
    return ExampleStore(path)


def _report(tmp_path, n: int, algorithm: dict, extra: dict):
    params = {k: v.detach() for k, v in SPEC.build().named_parameters()}
    job = TaskJob(_store(tmp_path, n), None, 7, {}, None)
    try:
        return job.run(Plan("train", 1, algorithm, SPEC, 0, None, extra, None, 5), params, None)
    finally:
        job.store.close()


def _check_in(tmp_path, n: int):
    store = _store(tmp_path, n)
    try:
        runtime = DeviceRuntime(DeviceConfig(server="127.0.0.1:1", device_id="d"), store, None)  # type: ignore[arg-type]
        request = runtime._check_in_request(DeviceState())
    finally:
        store.close()
    request.session = ""  # random per process
    return request.SerializeToString()


class _Server(BoundedReports):
    def __init__(self, algorithm):
        self.algorithm, self.max_weight = algorithm, 10**6


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sizes=st.lists(st.integers(1, 40), min_size=2, max_size=2, unique=True))
def test_what_the_server_sees_under_dpsgd_does_not_depend_on_the_example_count(tmp_path, sizes):
    from hamrah.algorithms import build

    seen = []
    for n in sizes:
        reported, metrics, update, _ = _report(tmp_path, n, DPSGD, LEDGER)
        assert isinstance(update, dict)
        # the report: 1 example and no metric (neither a loss nor the store's epsilon, which tells n_k)
        seen.append((reported, json.dumps(metrics), sorted(update), _check_in(tmp_path, n)))
    assert seen[0] == seen[1] and seen[0][0] == 1 and seen[0][1] == "{}"
    # the aggregate weight: 1 in the simulator and on the server, whatever count a report claims
    algorithm = build(**DPSGD)
    server, rs = _Server(algorithm), SimpleNamespace(capped=0)
    assert {weight_of(ExampleLedger(1e-5), None)(n) for n in sizes} == {1.0}
    assert {server._weight(rs, n) for n in sizes} == {1}  # type: ignore[arg-type]
    assert rs.capped == sum(n > 1 for n in sizes)  # a count above 1 is counted as 1 (and noted)


def test_other_modes_still_weigh_by_the_example_count(tmp_path):
    reported, _, _, _ = _report(tmp_path, 9, HP, {})
    assert reported == 9 and weight_of(None, None)(9) == 9.0
