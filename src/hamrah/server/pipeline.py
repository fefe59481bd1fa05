"""The client-update pipeline (compression, DP, homomorphic encryption) on the real server.

The config's ``[compression]`` / ``[privacy]`` / ``[homomorphic_encryption]`` sections become a
:class:`hamrah.privacy.PipelineSpec` that travels to devices in the FL plan's ``extra["pipeline"]``. A
device encodes its update through the chain's client half (:mod:`hamrah.device.pipeline`) and sends the
wire bytes as one uint8 tensor ``"pipeline/payload"``; the server parses and decodes each report (the
Aggregators then sum decoded updates, weight 1 each under DP), runs the server halves on the mean
(central noise, from OS entropy: never from the run's seed), charges the round to the budget ledger
``<state>/privacy.json`` (saved before the round's commit, so a crash over-counts rather than forgets)
and puts epsilon in the round record. On restart the ledger is reloaded, so the spent budget survives.

Adaptive clipping (Andrew et al. 2021): the clip norm is the clip stage's server state; it travels to
devices in ``extra["pipeline/server_state"]`` with every task, the clipped bit comes back inside the
payload, the noise stage updates the norm after the round, and the stages' server states are saved in
``<state>/pipeline_state.json`` next to the ledger (also before the commit) and reloaded on restart.

Homomorphic encryption: the server generates a key pair when it starts (never written to disk: no
ciphertext outlives a round, so a restart simply makes a new pair) and keeps the
:class:`~hamrah.he.stage.KeyHolder`; the public key travels in the spec. Reports are kept whole
(``buffered``): each is parsed and checked when it arrives, and at commit the ciphertexts are weighted
by ``n_k`` (1 under DP) and added with the public key only; the key holder decrypts the sum, which is
divided by the total weight before the remaining server halves (central noise) run.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import torch

from hamrah.algorithms import WEIGHTED_MEAN_ALGORITHMS
from hamrah.algorithms.base import ClientResult
from hamrah.core.errors import BudgetExhausted, ConfigError, DataError, ProtocolError
from hamrah.core.params import Params
from hamrah.privacy.chains import (
    PipelineRun, PipelineSpec, dp_settings, resolve_pipeline, server_state_from_dict, server_state_to_dict,
)

log = logging.getLogger("hamrah.server")
PLAN_KEY, PAYLOAD_KEY, LEDGER_FILE = "pipeline", "pipeline/payload", "privacy.json"
STATE_KEY, STATE_FILE = "pipeline/server_state", "pipeline_state.json"
MAX_PLAN_BYTES = 900_000  # the plan travels in one gRPC message of at most 1 MiB + 64 KiB


class ServerPipeline:
    """The server's side of the pipeline: decode reports, noise the mean, keep the budget and clip norm.

    Args:
        spec: the pipeline. params: the model's parameters (the update template).
        state_dir: the server's ``--state`` folder (the ledger and the stages' server state live there).

    Raises:
        ConfigError: the plan would not fit one gRPC message (a CKKS public context above N = 16384),
            or the saved stage state does not match the chain.
    """

    def __init__(self, spec: PipelineSpec, params: Params, state_dir: str | Path):
        dp = spec.dp
        self.state_path = Path(state_dir) / STATE_FILE
        self.run = PipelineRun(spec, params, str(Path(state_dir) / LEDGER_FILE) if dp is not None else None)
        self.spec = self.run.spec  # with the key holder's public key, if any
        self._load_state()
        self.wire = self.run.wire_spec()
        self.stage = self.run.chain.wire_stage()
        self.he = self.stage if self.spec.homomorphic is not None else None
        self.bytes_up = 0  # this round's accepted payload bytes
        self.weight_in = 0  # this round's accepted weight (HE: bounded by max_weight)
        self.buffered = self.he is not None  # True: the Aggregators keep each report (a stage must see them all)
        size = len(json.dumps(self.plan_extra()))
        if size > MAX_PLAN_BYTES:
            raise ConfigError(f"pipeline: the plan's extra would be {size:,} bytes (the public key travels in it); "
                              f"expected at most {MAX_PLAN_BYTES:,}: use a smaller poly_modulus_degree")

    @classmethod
    def from_config(cls, config: dict, params: Params, goal: int, state_dir: str | Path,
                    algorithm: str) -> ServerPipeline | None:
        """Return the pipeline of a server config (``ServerSetup.config``), or None when it has none.

        Raises:
            ConfigError: a bad section, an impossible chain, or an algorithm that is not a weighted mean.
        """
        comp, priv, secure = config.get("compression"), config.get("privacy"), config.get("secure_aggregation")
        he = config.get("homomorphic_encryption")
        if comp is None and priv is None and secure is None and he is None:
            return None
        if algorithm not in WEIGHTED_MEAN_ALGORITHMS:
            raise ConfigError(f"algorithm {algorithm} with [compression]/[privacy]/[homomorphic_encryption]: expected "
                              f"one of {', '.join(sorted(WEIGHTED_MEAN_ALGORITHMS))} (the pipeline replaces the "
                              "weighted mean)")
        comp = None if comp is None else {k: v for k, v in comp.items() if v is not None}
        spec = resolve_pipeline(comp, None if priv is None else dp_settings(priv), int(config["data"]["num_clients"]),
                                goal, int(config["run"]["rounds"]), secure, he)
        if spec is not None and spec.dp is not None and spec.dp.mode == "distributed":
            raise ConfigError("privacy.mode = \"distributed\" runs in the simulator (hamrah run); the server does "
                              "not carry distributed DP's ring vectors through its SecAgg rounds yet")
        return cls(spec, params, state_dir)

    def _load_state(self) -> None:
        if not self.state_path.exists():
            return
        try:
            data = json.loads(self.state_path.read_text(encoding="utf-8"))
            self.run.server_state = server_state_from_dict(self.run.chain, self.run.template, data["stages"])
        except (OSError, ValueError, KeyError, TypeError, ConfigError) as err:
            raise DataError(f"{self.state_path}: cannot restore the pipeline's server state ({err}); expected the "
                            f"file this server wrote for stages {', '.join(self.run.chain.names)}") from None
        log.info("pipeline server state restored from %s: %s", self.state_path, data["stages"])

    def _save_state(self) -> None:
        stages = server_state_to_dict(self.run.chain, self.run.server_state)
        if not stages:
            return
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"stages": stages}, sort_keys=True), encoding="utf-8")
        os.replace(tmp, self.state_path)

    def plan_extra(self) -> dict:
        """Return what the FL plan's ``extra`` carries for devices: the spec and the state clients read."""
        out = {PLAN_KEY: self.spec.to_dict()}
        broadcast = server_state_to_dict(self.run.chain, self.run.server_state, client_side_only=True)
        return {**out, STATE_KEY: broadcast} if broadcast else out

    def refuse_start(self, rounds_left: int) -> None:
        """Raise ConfigError unless the rounds left fit in what is left of the budget."""
        if rounds_left > 0:
            self.run.refuse_start(rounds_left)

    def may_run(self, round_idx: int) -> bool:
        """Return False (and log why) when the next round would exceed the privacy budget; start a round's counts."""
        self.bytes_up, self.weight_in = 0, 0
        try:
            self.run.check_round()
        except BudgetExhausted as err:
            log.warning("round %d not started: %s", round_idx, err)
            return False
        return True

    def decode_result(self, client_id: int, tensors: Params, num_examples: int, metrics: dict) -> ClientResult:
        """Return the ClientResult of one device's encoded report.

        Raises:
            ProtocolError: the report is not one pipeline payload, its bytes do not parse, or (HE) its
                ciphertext is malformed, of the wrong size, or would overflow the sum's headroom.
        """
        if set(tensors) != {PAYLOAD_KEY} or tensors[PAYLOAD_KEY].dtype != torch.uint8:
            raise ProtocolError(f"update: expected one uint8 tensor {PAYLOAD_KEY!r} (this round's pipeline is "
                                f"{', '.join(self.run.chain.names)}), got {sorted(tensors)[:5]}")
        data = tensors[PAYLOAD_KEY].numpy().tobytes()
        weight = int(self.run.weight(num_examples))
        if self.he is not None:
            self.he.read(data, self.wire)  # parse and check now; the ciphertext is added at commit
            limit = self.he.settings.max_weight
            if self.weight_in + weight > limit:
                raise ProtocolError(f"update: weight {weight} would take this round's encrypted sum to "
                                    f"{self.weight_in + weight}, past homomorphic_encryption.max_weight = {limit}")
            self.weight_in += weight
            self.bytes_up += len(data)
            return ClientResult(client_id, {PAYLOAD_KEY: tensors[PAYLOAD_KEY]}, weight, metrics)
        delta = self.run.chain.decode_client(self.stage.read(data, self.wire), self.run.server_state)  # DP re-clip
        if not all(bool(torch.isfinite(v).all()) for v in delta.values()):
            raise ProtocolError("update: decoded values are not all finite")
        self.bytes_up += len(data)
        return ClientResult(client_id, delta, weight, metrics)

    def server_half(self, results: list[ClientResult], round_idx: int, reported: int) -> list[ClientResult]:
        """Run the server halves on the merged mean the Master Aggregator returned (HE: on the decrypted
        weighted sum of the buffered reports' ciphertexts, divided by their total weight)."""
        if not results:
            return results
        if self.he is not None:
            results = [self._decrypt_mean(results)]
        if len(results) != 1:
            raise ConfigError("pipeline: expected the streaming Aggregators' one merged result")
        r = results[0]
        rng = np.random.default_rng()  # OS entropy: the noise must not be reproducible from the config
        return [ClientResult(r.client_id, self.run.server_half(r.delta, reported, round_idx, rng), r.num_examples,
                             r.metrics)]

    def _decrypt_mean(self, results: list[ClientResult]) -> ClientResult:
        payloads = [self.he.read(r.delta[PAYLOAD_KEY].numpy().tobytes(), self.wire) for r in results]
        weights = [int(r.num_examples) for r in results]
        total = self.he.decrypt(self.he.weighted_sum(payloads, weights), self.wire)
        weight = sum(weights)
        loss = sum(w * float(r.metrics.get("train_loss", 0.0)) for w, r in zip(weights, results)) / weight
        return ClientResult(-1, {k: v / weight for k, v in total.items()}, weight, {"train_loss": loss})

    def record_round(self) -> dict:
        """Charge the committed round to the ledger and save the stages' server state; return the round
        record's extra fields."""
        eps = self.run.record_round()
        self._save_state()
        out = {"bytes_up": self.bytes_up}
        broadcast = server_state_to_dict(self.run.chain, self.run.server_state, client_side_only=True)
        if broadcast:  # e.g. {"dp_clip": {"clip": C, "rounds": r}}: what the next round's plan carries
            out["pipeline_state"] = broadcast
        self.bytes_up, self.weight_in = 0, 0
        return out if eps is None else {**out, "epsilon": eps, "delta": self.run.delta}


__all__ = ["LEDGER_FILE", "PAYLOAD_KEY", "PLAN_KEY", "STATE_FILE", "STATE_KEY", "ServerPipeline"]
