"""Learning-rate sweeps build each rate's algorithm like a run does."""

from __future__ import annotations

import hamrah.experiments.sweep as sweep
from hamrah.experiments.config import from_dict


def test_a_scaffold_sweep_gives_the_algorithm_the_population_size(monkeypatch):
    """SCAFFOLD's server control variate averages over N = all clients, not over the sampled share."""
    seen, real = [], sweep.build_algorithm
    monkeypatch.setattr(sweep, "build_algorithm", lambda cfg, n=None: seen.append(n) or real(cfg, n))
    cfg = from_dict(
        {
            "data": {"dataset": "mnist", "partition": "iid", "num_clients": 10},
            "model": {"name": "logreg"},
            "algorithm": {"name": "scaffold", "client_fraction": 0.2, "local_epochs": 1, "batch_size": 500, "lr": 0.1},
            "run": {"rounds": 1, "seed": 0, "workers": 1},  # in-process: no worker pool to start
        }
    )
    points = sweep.run_sweep(cfg, [0.05, 0.1])
    assert seen == [10, 10] and len(points) == 2


def _to_target(rounds: int, sweep_section: dict):
    """Logistic regression on MNIST run to 80% accuracy, for at most ``rounds`` rounds."""
    return from_dict(
        {
            "data": {"dataset": "mnist", "partition": "iid", "num_clients": 10},
            "model": {"name": "logreg"},
            "algorithm": {"name": "fedavg", "client_fraction": 0.2, "local_epochs": 1, "batch_size": 500, "lr": 0.1},
            "run": {"rounds": rounds, "seed": 0, "workers": 1, "target_accuracy": 0.8, "stop_at_target": True},
            "sweep": sweep_section,
        }
    )


def test_a_sweep_with_widen_tries_rates_past_the_edge_holding_the_best_until_its_budget_ends():
    cfg = _to_target(3, {"widen": 1})
    points = sweep.run_sweep(cfg, [0.1, 1.0])
    assert points[1].rounds_to_target < points[0].rounds_to_target  # 1.0 wins, at the upper edge
    assert [p.lr for p in points] == [0.1, 1.0, 10.0]  # one step up (10x apart), then the budget is spent


def test_a_pruned_sweep_stops_each_rate_where_the_best_so_far_had_reached_the_target():
    cfg = _to_target(4, {"prune": True})
    fast, slow, slowest = sweep.run_sweep(cfg, [1.0, 0.1, 0.01])
    assert 1 < fast.rounds_to_target < 2 and not fast.pruned  # the cap for the others: round 2
    assert slow.rounds_to_target < 2 and not slow.pruned  # reached before the cap
    assert slowest.rounds_run == 2 and slowest.pruned and slowest.rounds_to_target is None
    assert sweep.best_point([fast, slow, slowest]) is fast
