"""Every algorithm under every pipeline (issue 11): each combination runs a tiny simulation or is refused at
config time with a reason derived from the algorithm's declared statistics and the stages' traits.

Also the equivalences the aggregate-then-apply contract promises: SCAFFOLD under SecAgg equals SCAFFOLD
plain (up to SecAgg's fixed-point quantisation), FedNova under a lossless pipeline equals FedNova plain,
and the robust-aggregator refusals (a secure sum, central noise) with the reason.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from hamrah.aggregation import Median
from hamrah.algorithms import ALGORITHMS, build
from hamrah.core.errors import ConfigError
from hamrah.core.params import max_abs_diff
from hamrah.data import ArrayData, Dataset, FederatedDataset
from hamrah.pipeline import resolve_pipeline
from hamrah.simulation import SimulationConfig, Simulator, seeded

POPULATION, COHORT, ROUNDS = 10, 5, 2
DP = {"clip": 4.0, "noise_multiplier": 0.3, "sampling": "fixed"}
SECURE = {"clip": 4.0, "input_bits": 24}
PIPELINES: dict[str, dict] = {
    "none": {},
    "quantize": {"compression": {"codec": "quantize", "bits": 8}},
    "sign": {"compression": {"codec": "sign"}},
    "topk": {"compression": {"codec": "topk", "fraction": 0.3}},
    "mask": {"compression": {"codec": "mask", "p": 0.5}},
    "float16": {"compression": {"codec": "float16"}},
    "bfloat16": {"compression": {"codec": "bfloat16"}},
    "central_dp": {"privacy": {"mode": "central", **DP}},
    "local_dp": {"privacy": {"mode": "local", **DP}},
    "secagg": {"secure": {"variant": "secagg", **SECURE}},
    "secagg+": {"secure": {"variant": "secagg+", **SECURE}},
    "paillier": {"homomorphic": {"scheme": "paillier", "key_bits": 512, "bound": 4.0}},
    "ckks": {"homomorphic": {"scheme": "ckks", "poly_modulus_degree": 4096, "bound": 4.0}},
}
# FedNova's ||a_i||_1 is a count (>= 1, growing with local steps): no clip bounds it and a secure sum's
# coordinate range would clip it, so these are refused (hamrah.core.pipeline.check_statistics).
REFUSED = {("fednova", p) for p in ("central_dp", "local_dp", "secagg", "secagg+", "paillier", "ckks")}


class Tiny(nn.Module):
    """A 4 -> 3 linear classifier: 15 parameters, so HE and SecAgg rounds take milliseconds."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.reshape(len(x), -1))


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models: threads only add contention


@pytest.fixture(scope="module")
def fed() -> FederatedDataset:
    rng = np.random.default_rng(0)
    w = rng.normal(size=(4, 3))
    x = rng.normal(size=(260, 4)).astype(np.float32)
    y = (x @ w).argmax(1)
    ds = Dataset(
        "tiny",
        ArrayData(torch.from_numpy(x[:200]), torch.from_numpy(y[:200])),
        ArrayData(torch.from_numpy(x[200:]), torch.from_numpy(y[200:])),
        num_classes=3,
    )
    sizes = [8, 12, 16, 20, 24, 16, 20, 28, 24, 32]  # unequal n_k: the weighting matters
    cuts = np.cumsum(sizes)[:-1]
    return FederatedDataset(ds, tuple(np.split(np.arange(200), cuts)), "hand")


def _algorithm(name: str):
    hp = {"lr": 0.1} if name == "fedsgd" else {"lr": 0.1, "batch_size": 8, "local_epochs": 1}
    if name == "scaffold":
        hp["num_clients"] = POPULATION
    return build(name, COHORT / POPULATION, **hp)


def _simulator(fed, name: str, pipeline: str, aggregator=None, **over) -> Simulator:
    p = {**PIPELINES[pipeline], **over}
    spec = resolve_pipeline(
        p.get("compression"), p.get("privacy"), POPULATION, COHORT, ROUNDS, p.get("secure"), p.get("homomorphic")
    )
    return Simulator(
        seeded(Tiny, 0),
        fed,
        _algorithm(name),
        SimulationConfig(rounds=ROUNDS, workers=1),
        aggregator=aggregator,
        pipeline=spec,
    )


@pytest.mark.parametrize("pipeline", list(PIPELINES))
@pytest.mark.parametrize("name", ALGORITHMS)
def test_every_algorithm_runs_under_every_pipeline_or_is_refused_with_the_reason(fed, name, pipeline):
    if (name, pipeline) in REFUSED:
        with pytest.raises(ConfigError, match="cannot carry statistic 'a_norm'.*bounded=False"):
            _simulator(fed, name, pipeline)
        return
    sim = _simulator(fed, name, pipeline)
    start = {k: v.clone() for k, v in sim.params.items()}
    result = sim.run()
    assert [r.clients for r in result.history] == [COHORT] * ROUNDS
    assert all(torch.isfinite(v).all() for v in result.params.values())
    assert max_abs_diff(result.params, start) > 1e-4  # the rounds moved the model
    assert all(np.isfinite(r.train_loss) for r in result.history)


def test_scaffold_under_secagg_equals_scaffold_plain_up_to_quantisation(fed):
    plain = _simulator(fed, "scaffold", "none").run()
    secure = _simulator(fed, "scaffold", "secagg").run()
    step = 2 * SECURE["clip"] / 2 ** SECURE["input_bits"]  # one quantisation step per coordinate and client
    diff = max_abs_diff(plain.params, secure.params)
    assert diff < 50 * step, diff
    plain_sim, secure_sim = _simulator(fed, "scaffold", "none"), _simulator(fed, "scaffold", "secagg")
    plain_sim.run(), secure_sim.run()
    assert max_abs_diff(plain_sim.server_state.c, secure_sim.server_state.c) < 50 * step  # the control variate too
    assert max(float(v.abs().max()) for v in plain_sim.server_state.c.values()) > 1e-3  # and it did move


def test_fednova_under_a_lossless_pipeline_equals_fednova_plain(fed):
    plain = _simulator(fed, "fednova", "none").run()
    lossless = _simulator(fed, "fednova", "none", compression={"codec": "none"})
    assert lossless.pipeline is not None
    piped = lossless.run()
    assert max_abs_diff(plain.params, piped.params) < 1e-6
    assert [r.train_loss for r in plain.history] == pytest.approx([r.train_loss for r in piped.history])


@pytest.mark.parametrize(
    "pipeline, reason",
    [
        ("secagg", "the server sees only the sum"),
        ("paillier", "the server sees only the sum"),
        ("central_dp", "calibrated to the sensitivity of the mean"),
    ],
)
def test_a_robust_aggregator_with_a_sum_only_or_centrally_noised_pipeline_is_refused(fed, pipeline, reason):
    with pytest.raises(ConfigError, match=reason):
        _simulator(fed, "fedavg", pipeline, aggregator=Median())


def test_a_robust_aggregator_runs_with_a_codec_and_with_local_dp(fed):
    for pipeline in ("topk", "local_dp"):
        result = _simulator(fed, "scaffold", pipeline, aggregator=Median()).run()
        assert all(torch.isfinite(v).all() for v in result.params.values())


@pytest.mark.parametrize("pipeline, equal", [("none", False), ("topk", False), ("local_dp", True), ("secagg", False)])
def test_train_loss_is_the_aggregation_weighted_mean_of_the_clients_losses(fed, pipeline, equal):
    """One definition on every path: weighted by n_k, or equally under DP (the server does the same)."""
    sim = _simulator(fed, "fedavg", pipeline)
    results = sim.train_round(1)
    aggregate = sim.aggregate(1, results)
    losses = [r.metrics["train_loss"] for r in results]
    weights = [1.0 if equal else r.num_examples for r in results]
    assert len(set(weights)) > 1 or equal  # unequal n_k, so the two definitions differ
    assert aggregate.metric("train_loss") == pytest.approx(np.average(losses, weights=weights), rel=1e-9)
