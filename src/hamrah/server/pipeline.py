"""The client-update pipeline (compression, DP) on the real server.

The config's ``[compression]`` / ``[privacy]`` sections become a :class:`hamrah.privacy.PipelineSpec`
that travels to devices in the FL plan's ``extra["pipeline"]``. A device encodes its update through
the chain's client half (:mod:`hamrah.device.pipeline`) and sends the wire bytes as one uint8 tensor
``"pipeline/payload"``; the server parses and decodes each report (the Aggregators then sum decoded
updates, weight 1 each under DP), runs the server halves on the mean (central noise, from OS entropy:
never from the run's seed), charges the round to the budget ledger ``<state>/privacy.json`` (saved
before the round's commit, so a crash over-counts rather than forgets) and puts epsilon in the round
record. On restart the ledger is reloaded, so the spent budget survives.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from hamrah.algorithms import WEIGHTED_MEAN_ALGORITHMS
from hamrah.algorithms.base import ClientResult
from hamrah.core.errors import BudgetExhausted, ConfigError, ProtocolError
from hamrah.core.params import Params
from hamrah.privacy.chains import PipelineRun, PipelineSpec, dp_settings, resolve_pipeline

log = logging.getLogger("hamrah.server")
PLAN_KEY, PAYLOAD_KEY, LEDGER_FILE = "pipeline", "pipeline/payload", "privacy.json"


class ServerPipeline:
    """The server's side of the pipeline: decode reports, noise the mean, keep the budget.

    Args:
        spec: the pipeline. params: the model's parameters (the update template).
        state_dir: the server's ``--state`` folder (the ledger lives there).
    """

    def __init__(self, spec: PipelineSpec, params: Params, state_dir: str | Path):
        dp = spec.dp
        if dp is not None and dp.adaptive is not None:
            raise ConfigError("privacy.adaptive = true on the real server: the clip norm would have to be broadcast "
                              "each round; expected a fixed clip (adaptive clipping runs in the simulator)")
        self.spec = spec
        self.run = PipelineRun(spec, params, str(Path(state_dir) / LEDGER_FILE) if dp is not None else None)
        self.wire = self.run.wire_spec()
        self.stage = self.run.chain.wire_stage()
        self.bytes_up = 0  # this round's accepted payload bytes
        self.buffered = False  # True: the Aggregators keep each report (a stage must see them all)

    @classmethod
    def from_config(cls, config: dict, params: Params, goal: int, state_dir: str | Path,
                    algorithm: str) -> ServerPipeline | None:
        """Return the pipeline of a server config (``ServerSetup.config``), or None when it has none.

        Raises:
            ConfigError: a bad section, an impossible chain, or an algorithm that is not a weighted mean.
        """
        comp, priv, secure = config.get("compression"), config.get("privacy"), config.get("secure_aggregation")
        if comp is None and priv is None and secure is None:
            return None
        if algorithm not in WEIGHTED_MEAN_ALGORITHMS:
            raise ConfigError(f"algorithm {algorithm} with [compression]/[privacy]: expected one of "
                              f"{', '.join(sorted(WEIGHTED_MEAN_ALGORITHMS))} (the pipeline replaces the weighted mean)")
        comp = None if comp is None else {k: v for k, v in comp.items() if v is not None}
        spec = resolve_pipeline(comp, None if priv is None else dp_settings(priv), int(config["data"]["num_clients"]),
                                goal, int(config["run"]["rounds"]), secure)
        return cls(spec, params, state_dir)

    def plan_extra(self) -> dict:
        """Return what the FL plan's ``extra`` carries for devices."""
        return {PLAN_KEY: self.spec.to_dict()}

    def refuse_start(self, rounds_left: int) -> None:
        """Raise ConfigError unless the rounds left fit in what is left of the budget."""
        if rounds_left > 0:
            self.run.refuse_start(rounds_left)

    def may_run(self, round_idx: int) -> bool:
        """Return False (and log why) when the next round would exceed the privacy budget."""
        try:
            self.run.check_round()
        except BudgetExhausted as err:
            log.warning("round %d not started: %s", round_idx, err)
            return False
        return True

    def decode_result(self, client_id: int, tensors: Params, num_examples: int, metrics: dict) -> ClientResult:
        """Return the ClientResult of one device's encoded report.

        Raises:
            ProtocolError: the report is not one pipeline payload, or its bytes do not parse.
        """
        if set(tensors) != {PAYLOAD_KEY} or tensors[PAYLOAD_KEY].dtype != torch.uint8:
            raise ProtocolError(f"update: expected one uint8 tensor {PAYLOAD_KEY!r} (this round's pipeline is "
                                f"{', '.join(self.run.chain.names)}), got {sorted(tensors)[:5]}")
        data = tensors[PAYLOAD_KEY].numpy().tobytes()
        delta = self.stage.decode(self.stage.read(data, self.wire))
        if not all(bool(torch.isfinite(v).all()) for v in delta.values()):
            raise ProtocolError("update: decoded values are not all finite")
        self.bytes_up += len(data)
        return ClientResult(client_id, delta, int(self.run.weight(num_examples)), metrics)

    def server_half(self, results: list[ClientResult], round_idx: int, reported: int) -> list[ClientResult]:
        """Run the server halves on the merged mean the Master Aggregator returned."""
        if not results:
            return results
        if len(results) != 1:
            raise ConfigError("pipeline: expected the streaming Aggregators' one merged result")
        r = results[0]
        rng = np.random.default_rng()  # OS entropy: the noise must not be reproducible from the config
        return [ClientResult(r.client_id, self.run.server_half(r.delta, reported, round_idx, rng), r.num_examples,
                             r.metrics)]

    def record_round(self) -> dict:
        """Charge the committed round to the ledger (saved); return the round record's extra fields."""
        eps = self.run.record_round()
        out = {"bytes_up": self.bytes_up}
        self.bytes_up = 0
        return out if eps is None else {**out, "epsilon": eps, "delta": self.run.delta}


__all__ = ["LEDGER_FILE", "PAYLOAD_KEY", "PLAN_KEY", "ServerPipeline"]
