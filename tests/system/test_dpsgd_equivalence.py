"""DP-SGD over gRPC gives the simulator's model: both weigh every report 1, whatever its example count.

Devices holding clients of unequal sizes (an unbalanced partition) report 1 example each and the
server weighs each report 1, as the simulator does; weighed by n_k (as before the fix) the two
drivers still agreed with each other, but the released model moved with one example more or less.
"""

from __future__ import annotations

from tests.system.harness import serve_cohort

from hamrah.algorithms.aggregate import aggregate_results
from hamrah.core.params import max_abs_diff
from hamrah.experiments.config import from_dict
from hamrah.experiments.runner import prepare


def test_a_dpsgd_server_round_equals_the_simulator_round_with_uniform_weights(tmp_path):
    exp = from_dict(
        {
            "data": {"dataset": "mnist", "partition": "unbalanced", "num_clients": 100},
            "model": {"name": "logreg"},
            "algorithm": {"name": "fedavg", "client_fraction": 0.05, "local_epochs": 1, "batch_size": 50, "lr": 0.1},
            "privacy": {"mode": "dpsgd", "clip": 1.0, "noise_multiplier": 1.0},
            "run": {"rounds": 1, "seed": 0},
        }
    )
    prep = prepare(exp)
    sim = prep.simulator()
    cohort = [int(c) for c in sim.sample(1)]
    sizes = [len(prep.data.client_indices[c]) for c in cohort]
    assert len(set(sizes)) > 1  # unequal clients: n_k weights would give another model
    server, _ = serve_cohort(tmp_path, exp, cohort)
    result = sim.run()
    assert max_abs_diff(server.coordinator.params, result.params) < 1e-5
    # the same clients' updates (a fresh simulator trains them alike), averaged with weights 1, not n_k
    fresh = prep.simulator()
    results = fresh.train_round(1)
    algo, start = prep.algorithm, fresh.params
    state = algo.init_server_state(start)
    uniform = algo.apply(start, aggregate_results(algo, results, weight_of=lambda n: 1.0), state)[0]
    by_count = algo.apply(start, aggregate_results(algo, results), state)[0]
    assert max_abs_diff(server.coordinator.params, uniform) < 1e-5
    assert max_abs_diff(server.coordinator.params, by_count) > 1e-4
