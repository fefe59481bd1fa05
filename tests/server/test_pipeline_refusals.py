"""The server refuses, before any round, a pipeline the algorithm's declared statistics cannot carry or a
robust aggregator behind a sum-only pipeline, with the reason (no list of algorithm names: issue 11)."""

from __future__ import annotations

import pytest
import torch

from hamrah.core.errors import ConfigError
from hamrah.server.pipeline import ServerPipeline

PARAMS = {"w": torch.zeros(3, 4), "b": torch.zeros(3)}


def _config(**sections) -> dict:
    return {"data": {"num_clients": 20}, "run": {"rounds": 2}, **sections}


def test_fednova_with_dp_is_refused_naming_its_count_statistic(tmp_path):
    cfg = _config(privacy={"mode": "local", "clip": 1.0, "noise_multiplier": 1.0})
    with pytest.raises(ConfigError, match="cannot carry statistic 'a_norm'"):
        ServerPipeline.from_config(cfg, PARAMS, 4, tmp_path, "fednova")
    ServerPipeline.from_config(cfg, PARAMS, 4, tmp_path, "scaffold")  # SCAFFOLD's statistics are clip-bounded


def test_a_robust_aggregator_behind_secure_aggregation_is_refused(tmp_path):
    cfg = _config(secure_aggregation={"variant": "secagg", "clip": 1.0}, server={"aggregator": {"name": "median"}})
    with pytest.raises(ConfigError, match="the server sees only the sum"):
        ServerPipeline.from_config(cfg, PARAMS, 4, tmp_path, "fedavg")


@pytest.mark.parametrize(
    "algorithm, names",
    [
        ("fedavg", ["delta/w", "delta/b"]),
        ("scaffold", ["delta/w", "delta/b", "control/w", "control/b"]),
        ("fednova", ["delta/w", "delta/b", "a_norm"]),
    ],
)
def test_the_wire_spec_is_the_algorithms_statistics(tmp_path, algorithm, names):
    pipe = ServerPipeline.from_config(
        _config(compression={"codec": "topk", "fraction": 0.5}), PARAMS, 4, tmp_path, algorithm
    )
    assert [n for n, _ in pipe.wire] == names


@pytest.mark.parametrize("mode", ["dpsgd", "local", "distributed"])
@pytest.mark.parametrize(
    "server",
    [{"eval_devices": 2}, {"mode": "cross_silo", "sites": 4, "site_eval_fraction": 0.2}],
    ids=["eval_devices", "site_eval_fraction"],
)
def test_federated_evaluation_is_refused_where_dp_protects_the_examples_from_the_server(mode, server):
    from hamrah.experiments import from_dict
    from hamrah.experiments.serve import server_setup
    from hamrah.server.config import server_config

    privacy = {"mode": mode, "clip": 1.0, "noise_multiplier": 1.0}
    if mode == "dpsgd":
        privacy = {"mode": "dpsgd", "clip": 1.0, "noise_multiplier": 1.0, "target_epsilon": 10.0}
    secure = {"secure_aggregation": {"variant": "secagg", "min_contributors": 2}} if mode == "distributed" else {}
    exp = from_dict(
        _config(
            data={"dataset": "synthetic_iid", "num_clients": 4}, model={"name": "logreg"}, privacy=privacy, **secure
        )
    )
    key = next(k for k in server if k in ("eval_devices", "site_eval_fraction"))
    with pytest.raises(ConfigError, match=rf"server.{key} = .* with privacy.mode = '{mode}': devices would send"):
        server_setup(exp, server_config(server))
    server_setup(exp, server_config({k: v for k, v in server.items() if k != key}))  # without it: accepted


def test_an_encrypted_sum_too_small_for_a_rounds_goal_is_refused(tmp_path):
    """Before: accepted, then each report past max_weight refused mid-round (a round might never reach
    min_reports)."""
    he = {"scheme": "paillier", "key_bits": 1024, "max_weight": 1000, "bound": 1.0}
    cfg = _config(homomorphic_encryption=he, server={"max_example_weight": 600})
    with pytest.raises(ConfigError, match=r"goal of 4 reports, each counting .* \(600\), sums to 2400; expected max"):
        ServerPipeline.from_config(cfg, PARAMS, 4, tmp_path, "fedavg")
    ServerPipeline.from_config(
        _config(homomorphic_encryption=he, server={"max_example_weight": 250}), PARAMS, 4, tmp_path, "fedavg"
    )
    unbounded = _config(homomorphic_encryption=he, server={"bounded_influence": False})
    with pytest.raises(ConfigError, match="bounded_influence = false"):
        ServerPipeline.from_config(unbounded, PARAMS, 4, tmp_path, "fedavg")


def test_an_encrypted_sum_of_one_update_is_refused():
    """A round committed on one report, or a simulated cohort of one, decrypts that update for the server."""
    from hamrah.experiments import from_dict
    from hamrah.experiments.serve import server_setup
    from hamrah.pipeline import resolve_pipeline
    from hamrah.server.config import server_config

    he = {"scheme": "paillier", "key_bits": 1024, "bound": 1.0}
    exp = from_dict(
        _config(
            data={"dataset": "synthetic_iid", "num_clients": 4},
            model={"name": "logreg"},
            algorithm={"client_fraction": 0.5},
            homomorphic_encryption=he,
        )
    )
    with pytest.raises(ConfigError, match="committed on 1 report: the decrypted sum of one report is that device"):
        server_setup(exp, server_config({"goal_count": 2, "min_reports": 1}))
    server_setup(exp, server_config({"goal_count": 2, "min_reports": 2}))
    with pytest.raises(ConfigError, match="with 1 client a round: the decrypted sum of one client's update"):
        resolve_pipeline(None, None, 10, 1, 5, None, he)
    assert resolve_pipeline(None, None, 10, 2, 5, None, he) is not None
