"""The ``[run]`` settings every driver honours: how many rounds, which are evaluated, when to stop."""

from __future__ import annotations

from dataclasses import dataclass

from hamrah.core.errors import ConfigError


@dataclass(frozen=True)
class RunPlan:
    """How long a run goes and when it is scored.

    Attributes:
        rounds: rounds to run (>= 1).
        seed: the root seed (cohorts, shuffles, the initial model).
        eval_every: score the global model every this many rounds, and after the last.
        target_accuracy: the test accuracy that ends the run when ``stop_at_target`` (else only recorded).
        stop_at_target: end the run at the first scored round reaching ``target_accuracy``.

    Example:
        >>> plan = RunPlan(rounds=10, eval_every=4)
        >>> [r for r in range(1, 11) if plan.evaluates(r)]
        [4, 8, 10]
    """

    rounds: int
    seed: int = 0
    eval_every: int = 1
    target_accuracy: float | None = None
    stop_at_target: bool = False

    def __post_init__(self) -> None:
        if self.rounds < 1:
            raise ConfigError(f"run.rounds = {self.rounds}: expected an integer >= 1")
        if self.eval_every < 1:
            raise ConfigError(f"run.eval_every = {self.eval_every}: expected an integer >= 1")

    def evaluates(self, round_idx: int) -> bool:
        """Return True when round ``round_idx``'s model is scored on the test set."""
        return round_idx % self.eval_every == 0 or round_idx == self.rounds

    def reached(self, test_accuracy: float | None) -> bool:
        """Return True when ``test_accuracy`` ends the run (``stop_at_target`` and the target met)."""
        target = self.target_accuracy
        return self.stop_at_target and target is not None and test_accuracy is not None and test_accuracy >= target


__all__ = ["RunPlan"]
