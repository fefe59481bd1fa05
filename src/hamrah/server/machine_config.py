"""The settings the round state machine (:mod:`hamrah.server.machine`) honours, built from the
``[server]`` section (how long a run goes is the shared round loop's: :class:`hamrah.loop.RunPlan`)."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class MachineConfig:
    """The settings the round machine honours (from ``[server]``; see ``hamrah.server.config.ServerConfig``
    for each)."""

    goal: int
    target: int
    reports_needed: int
    min_selected: int
    eval_target: int = 0
    selection_timeout_s: float = 60.0
    reporting_timeout_s: float = 300.0
    selection_window_s: float = 0.0
    max_round_attempts: int = 10
    retry_delay_s: float = 1.0
    no_show_rounds: int = 0
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 10.0
    cross_silo: bool = False  # reports_needed 0: every site still in the run
    final_eval: bool = False  # cross-silo: after the last round, every site scores the final model

    @classmethod
    def of(cls, cfg, goal: int) -> MachineConfig:
        """Build from a ``ServerConfig`` and the per-round goal (the sites, cross-silo)."""
        if getattr(cfg, "cross_silo", False):
            needed = cfg.min_reports or 0
            return cls(
                goal,
                goal,
                needed,
                needed,
                selection_timeout_s=cfg.selection_timeout_s,
                reporting_timeout_s=cfg.reporting_timeout_s,
                max_round_attempts=cfg.max_round_attempts,
                retry_delay_s=cfg.retry_delay_s,
                reconnect_min_s=cfg.reconnect_min_s,
                reconnect_max_s=cfg.reconnect_max_s,
                cross_silo=True,
                final_eval=cfg.site_eval_fraction > 0,
            )
        return cls(
            goal,
            cfg.selection_target(goal),
            cfg.reports_needed(goal),
            math.ceil(cfg.min_selected_fraction * goal),
            cfg.eval_devices,
            cfg.selection_timeout_s,
            cfg.reporting_timeout_s,
            cfg.selection_window_s,
            cfg.max_round_attempts,
            cfg.retry_delay_s,
            cfg.no_show_rounds,
            cfg.reconnect_min_s,
            cfg.reconnect_max_s,
        )


__all__ = ["MachineConfig"]
