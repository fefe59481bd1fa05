"""Secure aggregation as a pipeline stage: the sum through the real protocol, the protocol's bytes,
the chain rules, and a simulator run configured with [secure_aggregation]."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from hamrah.compression import TopK
from hamrah.core.errors import ConfigError
from hamrah.core.pipeline import Chain, process_round
from hamrah.experiments.config import from_dict
from hamrah.experiments.runner import prepare, run_experiment
from hamrah.secagg.stage import SecureAggregation


def _updates(n=6):
    g = torch.Generator().manual_seed(0)
    return {k: {"w": torch.randn(40, generator=g) * 0.1, "b": torch.randn(3, generator=g) * 0.1} for k in range(n)}


@pytest.mark.parametrize("variant", ["secagg", "secagg+"])
def test_the_stage_gives_the_plain_mean_and_reports_protocol_bytes(variant):
    ups = _updates(8)
    out = process_round(
        Chain([SecureAggregation(variant=variant)]),
        ups,
        {k: 1.0 for k in ups},
        {},
        {k: np.random.default_rng(k) for k in ups},
    )
    plain = {n: sum(u[n] for u in ups.values()) / len(ups) for n in ("w", "b")}
    assert max(float((out.aggregate[n] - plain[n]).abs().max()) for n in plain) < 1e-4  # 16-bit quantization
    masked = 43 * 19 / 8  # 43 entries of 16-bit inputs in a 16 + log2(8) = 19-bit ring
    assert all(b > masked for b in out.bytes.up.values())  # plus keys and shares
    assert all(b > 0 for b in out.bytes.down.values())


def test_weighted_means_go_through_the_secure_sum():
    ups = _updates(4)
    weights = {0: 1.0, 1: 2.0, 2: 3.0, 3: 4.0}
    out = process_round(
        Chain([SecureAggregation(clip=4.0)]), ups, weights, {}, {k: np.random.default_rng(k) for k in ups}
    )
    expected = sum(ups[k]["w"] * weights[k] for k in ups) / sum(weights.values())
    assert torch.allclose(out.aggregate["w"], expected, atol=1e-3)


def test_per_client_top_k_cannot_be_summed_securely():
    with pytest.raises(ConfigError, match="cannot be summed under secure aggregation"):
        Chain([TopK(fraction=0.1), SecureAggregation()])


@pytest.mark.parametrize(
    "kw, word", [({"variant": "secagg++"}, "variant"), ({"clip": 0}, "clip"), ({"input_bits": 64}, "input_bits")]
)
def test_bad_settings_are_refused(kw, word):
    with pytest.raises(ConfigError, match=word):
        SecureAggregation(**kw)


def test_a_simulated_run_with_secure_aggregation_and_central_dp(tmp_path):
    cfg = from_dict(
        {
            "data": {"dataset": "mnist", "partition": "iid", "num_clients": 20},
            "model": {"name": "logreg"},
            "algorithm": {"name": "fedavg", "client_fraction": 0.25, "local_epochs": 1, "batch_size": 50, "lr": 0.1},
            "run": {"rounds": 2, "seed": 0},
            "privacy": {"mode": "central", "clip": 0.5, "noise_multiplier": 0.5, "sampling": "fixed"},
            "secure_aggregation": {"variant": "secagg", "clip": 0.5},
        }
    )
    names = [type(s).__name__ for s in prepare(cfg).pipeline.chain().stages]
    assert names.index("SecureAggregation") < names.index("CentralGaussianNoise")  # noise after unmasking
    summary = run_experiment(cfg, tmp_path)
    assert summary["rounds_run"] == 2
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert all(5 * 2 * 7850 < r["bytes_up"] < 5 * 4 * 7850 for r in rows)  # 16-bit inputs in a 19-bit ring + keys
    assert rows[-1]["epsilon"] > rows[0]["epsilon"] > 0


@pytest.mark.parametrize("variant", ["secagg", "secagg+"])
def test_malicious_server_mode_gives_the_same_sum_and_pays_for_the_signatures(variant):
    """[secure_aggregation] malicious_server = true runs the actively secure protocol in simulation (seeded
    identities): the same aggregate as the semi-honest stage, and more bytes up per client (signatures)."""
    ups = _updates(8)
    rngs = {k: np.random.default_rng(k) for k in ups}
    plain = process_round(
        Chain([SecureAggregation(variant=variant)]),
        ups,
        {k: 1.0 for k in ups},
        {},
        rngs,
        server_rng=np.random.default_rng(1),
    )
    active = process_round(
        Chain([SecureAggregation(variant=variant, malicious_server=True)]),
        ups,
        {k: 1.0 for k in ups},
        {},
        rngs,
        server_rng=np.random.default_rng(1),
    )
    assert all(torch.equal(active.aggregate[n], plain.aggregate[n]) for n in ("w", "b"))
    assert all(active.bytes.up[k] > plain.bytes.up[k] for k in ups)
    with pytest.raises(ConfigError, match="malicious_server"):
        SecureAggregation(malicious_server="yes")
