"""The client-update pipeline (compression, DP, homomorphic encryption) on the real server.

The config's ``[compression]`` / ``[privacy]`` / ``[homomorphic_encryption]`` sections become a
:class:`hamrah.pipeline.PipelineSpec` that travels to devices in the FL plan's ``extra["pipeline"]``. A
device encodes its update through the chain's client half (:mod:`hamrah.device.pipeline`) and reports the
chain's wire bytes as the report's payload (one envelope); the server parses and decodes each report (the
Aggregators then sum decoded updates, weight 1 each under DP), runs the server halves on the mean
(central noise, from OS entropy: never from the run's seed), charges the round to the budget ledger
(a row of ``state.db`` written in the round's own commit transaction, :mod:`hamrah.server.privacy`)
and puts epsilon in the round record when the server can prove it (DP-FTRL, local DP; never a
sampling-based epsilon). On restart the ledger is reloaded, so the spent budget survives.

Distributed DP (``[privacy] mode = "distributed"``): devices add the discrete Gaussian noise in the ring
before masking and the server's SecAgg round decodes only the noisy sum (:mod:`hamrah.server.secure`).
Its accountant here charges every round as a sum of n_min noised devices *without* sampling
amplification (q = 1): that holds whichever devices check in, so the server records that epsilon.

Adaptive clipping (Andrew et al. 2021): the clip norm is the clip stage's server state; it travels to
devices in ``extra["pipeline/server_state"]`` with every task, the clipped bit comes back inside the
payload, the noise stage updates the norm after the round, and the stages' server states are saved in
``state.db`` with the ledger (same transaction as the round) and reloaded on restart.

Homomorphic encryption: the server generates a key pair when it starts (never written to disk: no
ciphertext outlives a round, so a restart simply makes a new pair) and keeps the
:class:`~hamrah.he.stage.KeyHolder`; the public key travels in the spec. Each report is parsed and
checked once, when it arrives; the pipeline keeps the parsed ciphertext and the Aggregators its number
(``buffered``: every report reaches commit), and at commit the ciphertexts are weighted
by ``n_k`` (1 under DP) and added with the public key only; the key holder decrypts the sum, which is
divided by the total weight before the remaining server halves (central noise) run.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hamrah.algorithms import DELTA, statistics_of
from hamrah.core.aggregate import Aggregate, Contribution, Statistic, statistics_template
from hamrah.core.errors import ConfigError, ProtocolError
from hamrah.core.metrics import merge_metrics
from hamrah.core.params import Params
from hamrah.core.updates import check_update
from hamrah.pipeline import PipelineRun, PipelineSpec, dp_settings, resolve_pipeline
from hamrah.pipeline.distributed import distributed_accountant
from hamrah.pipeline.spec import PLAN_KEY, STATE_KEY
from hamrah.privacy.server_state import server_state_to_dict
from hamrah.server.influence import UNBOUNDED_WEIGHT
from hamrah.server.privacy import ServerPrivacy, refuse_unprovable
from hamrah.server.reports import reported_loss

CIPHERTEXT_KEY = "he/ciphertext"  # an HE report: the number of its parsed ciphertext (ServerPipeline.ciphertext)
MAX_PLAN_BYTES = 900_000  # the plan travels in one gRPC message of at most 1 MiB + 64 KiB


def _refuse_he_headroom(spec: PipelineSpec, server: dict, goal: int) -> None:
    """Refuse an encrypted sum too small for a round's goal: each report past ``max_weight`` is refused at
    run time, so a round whose goal weighs more might never reach min_reports."""
    if spec.homomorphic is None:
        return
    if spec.equal_weights:
        per, why = 1, "each weighing 1"
    elif server.get("bounded_influence", True):
        per, why = int(server.get("max_example_weight") or 0), "each counting for up to server.max_example_weight"
    else:
        per, why = UNBOUNDED_WEIGHT, "each counting for its claimed num_examples (bounded_influence = false)"
    if per and goal * per > spec.homomorphic.max_weight:
        raise ConfigError(
            f"homomorphic_encryption.max_weight = {spec.homomorphic.max_weight}: a round's goal of {goal} reports, "
            f"{why} ({per}), sums to {goal * per}; expected max_weight >= {goal * per} (or a smaller goal "
            "or server.max_example_weight)"
        )


class ServerPipeline:
    """The server's side of the pipeline: decode reports, noise the mean, keep the budget and clip norm.

    Args:
        spec: the pipeline. params: the model's parameters.
        state_dir: the server's ``--state`` folder.
        store: the server's :class:`~hamrah.server.state.ServerStore`: the ledger and the stages' server
            state are rows of its database, committed with each round (None: kept in memory only).

    Raises:
        ConfigError: the plan would not fit one gRPC message (a CKKS public context above N = 16384),
            or the saved budget differs from the configured one, or the chain cannot carry the algorithm's
            ``statistics`` (the update template is those statistics, namespaced).
        DataError: checkpoints without a ledger, or a corrupt ledger or stage state.
    """

    def __init__(
        self,
        spec: PipelineSpec,
        params: Params,
        state_dir: str | Path,
        store=None,
        statistics: tuple[Statistic, ...] = (DELTA,),
        robust: bool = False,
    ):
        self.run = PipelineRun(spec, statistics_template(statistics, params))
        self.run.check(statistics, robust)
        if spec.dp is not None and spec.dp.mode == "distributed":  # no sampling amplification: see the docstring
            self.run.accountant = distributed_accountant(self.run.chain.stages[0], self.run.template, 1.0)
        self.spec = self.run.spec  # with the key holder's public key, if any
        self.privacy = ServerPrivacy(self.run, store)
        self.wire = self.run.wire_spec()
        self.stage = self.run.chain.wire_stage()
        self.he = self.stage if self.spec.homomorphic is not None else None
        self.weight_in = 0  # this round's accepted weight (HE: bounded by max_weight)
        self._ciphertexts: dict[int, Any] = {}  # HE: this round's reports, parsed once on arrival, by number
        self._numbers = itertools.count()
        self.buffered = self.he is not None  # True: the Aggregators keep each report (a stage must see them all)
        size = len(json.dumps(self.plan_extra()))
        if size > MAX_PLAN_BYTES:
            raise ConfigError(
                f"pipeline: the plan's extra would be {size:,} bytes (the public key travels in it); "
                f"expected at most {MAX_PLAN_BYTES:,}: use a smaller poly_modulus_degree"
            )

    @classmethod
    def from_config(
        cls, config: dict, params: Params, goal: int, state_dir: str | Path, algorithm: str, store=None
    ) -> ServerPipeline | None:
        """Return the pipeline of a server config (``ServerSetup.config``), or None when it has none.

        Raises:
            ConfigError: a bad section, an impossible chain, a chain that cannot carry the algorithm's
                statistics soundly (:func:`hamrah.core.pipeline.check_statistics`: e.g. a robust
                aggregator behind a secure sum), or an epsilon the server could not prove
                (:func:`hamrah.server.privacy.refuse_unprovable`).
        """
        comp, priv, secure = config.get("compression"), config.get("privacy"), config.get("secure_aggregation")
        he = config.get("homomorphic_encryption")
        if comp is None and priv is None and secure is None and he is None:
            return None
        robust = bool((config.get("server") or {}).get("aggregator"))
        comp = None if comp is None else {k: v for k, v in comp.items() if v is not None}
        spec = resolve_pipeline(
            comp,
            None if priv is None else dp_settings(priv),
            int(config["data"]["num_clients"]),
            goal,
            int(config["run"]["rounds"]),
            secure,
            he,
        )
        if spec is None:  # privacy.mode = "dpsgd" alone: DP-SGD is in the devices' local training
            return None
        refuse_unprovable(spec, secure is not None)
        _refuse_he_headroom(spec, config.get("server") or {}, goal)
        return cls(spec, params, state_dir, store, statistics_of(algorithm), robust)

    def plan_extra(self) -> dict:
        """Return what the FL plan's ``extra`` carries for devices: the spec and the state clients read."""
        out = {PLAN_KEY: self.spec.to_json()}
        broadcast = server_state_to_dict(self.run.chain, self.run.server_state, client_side_only=True)
        return {**out, STATE_KEY: broadcast} if broadcast else out

    def refuse_start(self, rounds_left: int) -> None:
        """Raise ConfigError unless the rounds left fit in what is left of the budget."""
        if rounds_left > 0:
            self.run.refuse_start(rounds_left)

    def refusal(self, round_idx: int) -> str | None:
        """Return why round ``round_idx`` would exceed the privacy budget, or None (a ``hamrah.loop.Budget``)."""
        return self.run.refusal(round_idx)

    def start_round(self, round_idx: int) -> None:
        """Start the counts of an attempt at round ``round_idx`` (the HE weight, DP-FTRL's reports)."""
        self.weight_in = 0
        self._ciphertexts.clear()
        self.privacy.start_round(round_idx)

    def decode_result(self, client_id: int, data: bytes, num_examples: int, metrics: dict) -> Contribution:
        """Return the Contribution of one device's report, the chain's wire bytes: its decoded packed
        statistics, or, under HE, the number of its ciphertext, parsed and checked here once and kept
        by this pipeline until commit (the Aggregators keep the number: a lost Aggregator loses the report).

        Raises:
            ProtocolError: the bytes do not parse as this round's pipeline payload, or (HE) the
                ciphertext is malformed, of the wrong size, or would overflow the sum's headroom.
        """
        weight = int(self.run.weight(num_examples))
        loss = reported_loss(metrics, weight)
        if self.he is not None:
            payload = self.he.read(data, self.wire)  # parsed and checked once, now; added at commit
            limit = self.he.settings.max_weight
            if self.weight_in + weight > limit:
                raise ProtocolError(
                    f"update: weight {weight} would take this round's encrypted sum to "
                    f"{self.weight_in + weight}, past homomorphic_encryption.max_weight = {limit}"
                )
            self.privacy.admit(client_id)  # DP-FTRL: at most one report per device per tree
            self.weight_in += weight
            number = next(self._numbers)
            self._ciphertexts[number] = payload
            return Contribution(client_id, {CIPHERTEXT_KEY: torch.tensor([number])}, float(weight), loss)
        delta = self.run.chain.decode_client(self.stage.read(data, self.wire), self.run.server_state)  # DP re-clip
        check_update(delta, what="update (decoded)")  # the simulator's check too (hamrah.core.updates)
        self.privacy.admit(client_id)  # DP-FTRL: at most one report per device per tree
        return Contribution(client_id, delta, float(weight), loss)

    def server_half(
        self, aggregate: Aggregate | None, reports: list[Contribution], round_idx: int, reported: int
    ) -> Aggregate | None:
        """Run the server halves on the round's mean (HE: on the decrypted weighted sum of the buffered
        reports' ciphertexts); return the aggregate the algorithm applies (None: nothing to apply)."""
        if self.he is not None and reports:
            aggregate = self._decrypt(reports)
        if aggregate is None:
            return None
        mean = {k: (v / aggregate.weight).to(torch.float32) for k, v in aggregate.sums.items()}
        rng = np.random.default_rng()  # OS entropy: the noise must not be reproducible from the config
        out = self.run.server_half(mean, reported, round_idx, rng)
        return Aggregate.from_mean(out, aggregate.weight, aggregate.count, aggregate.metrics)

    def ciphertext(self, report: Contribution) -> Any:
        """Return the parsed ciphertext (an ``HEPayload``) of one of this round's HE reports."""
        return self._ciphertexts[int(report.stats[CIPHERTEXT_KEY][0])]

    def _decrypt(self, reports: list[Contribution]) -> Aggregate:
        payloads = [self.ciphertext(r) for r in reports]
        weights = [int(r.weight) for r in reports]
        total = self.he.decrypt(self.he.weighted_sum(payloads, weights), self.wire)
        metrics: dict = {}
        for r in reports:
            metrics = merge_metrics(metrics, r.metrics)
        return Aggregate({k: v.to(torch.float64) for k, v in total.items()}, float(sum(weights)), len(reports), metrics)

    def record_round(self) -> dict:
        """Charge the committed round to the ledger and save the stages' server state; return the round
        record's extra fields."""
        out = dict(self.privacy.record_round())
        broadcast = server_state_to_dict(self.run.chain, self.run.server_state, client_side_only=True)
        if broadcast:  # e.g. {"dp_clip": {"clip": C, "rounds": r}}: what the next round's plan carries
            out["pipeline_state"] = broadcast
        self.weight_in = 0
        self._ciphertexts.clear()
        return out


__all__ = ["CIPHERTEXT_KEY", "PLAN_KEY", "STATE_KEY", "ServerPipeline"]
