"""Experiments: TOML configs, the runner, learning-rate sweeps and paper reproductions."""

from hamrah.experiments.config import ExperimentConfig, from_dict, load_config
from hamrah.experiments.personal import personal_model
from hamrah.experiments.runner import prepare, run_experiment
from hamrah.experiments.sweep import run_sweep
from hamrah.experiments.targets import paper_grid, rounds_to_target

__all__ = [
    "ExperimentConfig",
    "from_dict",
    "load_config",
    "paper_grid",
    "personal_model",
    "prepare",
    "rounds_to_target",
    "run_experiment",
    "run_sweep",
]
