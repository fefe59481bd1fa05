"""A representative subset of the algorithm x pipeline matrix (tests/algorithms/test_matrix.py) over the real
server and devices on loopback gRPC: SCAFFOLD under SecAgg commits the same model and control variate as a
plain SCAFFOLD server (up to SecAgg's fixed point), and FedProx, FedNova and SCAFFOLD run with a codec or
local DP. Before issue 11 the server refused every one of these (a name list of weighted-mean algorithms).
"""

from __future__ import annotations

import asyncio

import pytest
from tests.system.harness import make_setup, records, run_system

from hamrah.core.params import max_abs_diff
from hamrah.experiments.config import from_dict

pytestmark = pytest.mark.slow
DEVICES = 6
ALGORITHMS = {
    "scaffold": {"name": "scaffold", "client_fraction": 0.3, "local_epochs": 1, "batch_size": 50, "lr": 0.05},
    "fedprox": {"name": "fedprox", "client_fraction": 0.3, "local_epochs": 1, "batch_size": 50, "lr": 0.1, "mu": 0.1},
    "fednova": {"name": "fednova", "client_fraction": 0.3, "local_epochs": 1, "batch_size": 50, "lr": 0.1},
}


def _experiment(algorithm: str, **sections):
    return from_dict(
        {
            "data": {"dataset": "mnist", "partition": "iid", "num_clients": 20},
            "model": {"name": "logreg"},
            "algorithm": ALGORITHMS[algorithm],
            "run": {"rounds": 2, "seed": 0},
            **sections,
        }
    )


def _serve(tmp_path, name: str, exp):
    # every device is selected every round (6 of 6), so two servers average the same clients
    setup, stores, tokens = make_setup(
        tmp_path / name, exp, devices=DEVICES, goal_count=DEVICES, over_selection=1.0, min_reports=5
    )
    server, summary, _ = asyncio.run(run_system(setup, tmp_path / name / "state", stores, tokens))
    assert summary["rounds_committed"] == 2
    return server, records(tmp_path / name / "state", setup)


def test_scaffold_under_secagg_over_grpc_equals_plain_scaffold(tmp_path):
    plain, _ = _serve(tmp_path, "plain", _experiment("scaffold"))
    secure, recs = _serve(
        tmp_path,
        "secure",
        _experiment("scaffold", secure_aggregation={"variant": "secagg", "clip": 0.5, "input_bits": 24}),
    )
    assert all(r["reported"] == DEVICES and r["secagg_survivors"]["unmasking"] == DEVICES for r in recs)
    assert max_abs_diff(secure.coordinator.params, plain.coordinator.params) < 1e-4
    c_plain, c_secure = plain.coordinator.server_state.c, secure.coordinator.server_state.c
    assert max(float(v.abs().max()) for v in c_plain.values()) > 1e-4  # the control variate moved
    assert max_abs_diff(c_secure, c_plain) < 1e-3


@pytest.mark.parametrize(
    "algorithm, sections",
    [
        ("fedprox", {"compression": {"codec": "topk", "fraction": 0.1}}),
        ("fednova", {"compression": {"codec": "topk", "fraction": 0.1}}),
        ("scaffold", {"privacy": {"mode": "local", "clip": 1.0, "noise_multiplier": 0.1, "sampling": "fixed"}}),
    ],
)
def test_algorithms_that_are_not_a_plain_mean_run_with_a_pipeline_over_grpc(tmp_path, algorithm, sections):
    server, recs = _serve(tmp_path, "run", _experiment(algorithm, **sections))
    assert [r["round"] for r in recs] == [1, 2] and all(r["reported"] >= 5 for r in recs)
    assert all(r["bytes_up"] > 0 for r in recs)
    start = server.coordinator._initial_params()
    assert max_abs_diff(server.coordinator.params, start) > 1e-4
