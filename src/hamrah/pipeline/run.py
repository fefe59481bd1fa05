"""A driver's pipeline state across rounds: client stage states, the chain's server state, the accountant.

:class:`PipelineRun` is what a driver (the simulator, the server) keeps across rounds: each client's
stage state (error feedback), the chain's server state, and the privacy accountant or budget ledger
(imported only when the spec has DP). It does no I/O beyond the ledger file the caller names.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from hamrah.core.aggregate import CombineRule, Statistic
from hamrah.core.errors import BudgetExhausted
from hamrah.core.params import Params
from hamrah.core.pipeline import RoundOutput, ServerContext, check_statistics, process_round, wire_spec
from hamrah.core.wire import Spec
from hamrah.pipeline.spec import PipelineSpec

if TYPE_CHECKING:
    from hamrah.he.stage import KeyHolder
    from hamrah.pipeline.distributed_accounting import DistributedAccountant
    from hamrah.privacy.accounting import PrivacyAccountant
    from hamrah.privacy.ledger import BudgetLedger


class PipelineRun:
    """A driver's pipeline state across rounds: client states, server state, accountant or ledger.

    Args:
        spec: the pipeline.
        template: the model's parameters (names and shapes of an update).
        ledger_path: where the budget ledger is kept (a server's state folder), or None (in memory).
        key_holder: with ``[homomorphic_encryption]``, the key holder that decrypts sums (None: a fresh
            key pair from the OS CSPRNG); the run's spec then carries its public key.
        model: the model's parameters (what is broadcast, for the bytes down; None: ``template``).
    """

    def __init__(
        self,
        spec: PipelineSpec,
        template: Params,
        ledger_path: str | None = None,
        key_holder: KeyHolder | None = None,
        model: Params | None = None,
    ) -> None:
        if spec.homomorphic is not None:  # the driver that aggregates keeps the key holder; devices get the public key
            from hamrah.he.stage import KeyHolder

            key_holder = key_holder or KeyHolder.generate(spec.homomorphic)
            spec = spec.with_public_key(key_holder.public_bytes)
        self.key_holder = key_holder
        self.spec, self.chain, self.template = spec, spec.chain(key_holder), template
        self.model = template if model is None else model
        self.client_states: dict[int, tuple[Any, ...]] = {}
        self.server_state = self.chain.init_server(template)
        for st in self.chain.stages:  # refuse before round 1 a clip the secure sum's rounding could exceed
            if getattr(st, "decode_error", 0.0) > 0 and hasattr(st, "pre_clip"):
                st.pre_clip(st.clip, sum(v.numel() for v in template.values()))
        self.ledger_path = ledger_path
        dp, rs = spec.dp, spec.round_spec()
        self.delta = dp.delta if dp is not None else None
        self.ledger: BudgetLedger | None = None  # when a target epsilon is set
        self.accountant: PrivacyAccountant | DistributedAccountant | None = None  # with DP
        if dp is not None and dp.mode == "distributed":
            from hamrah.pipeline.distributed import distributed_accountant

            q = spec.poisson_q
            self.accountant = distributed_accountant(self.chain.stages[0], template, 1.0 if q is None else q)
        elif dp is not None and rs is not None:
            from hamrah.privacy.accounting import PrivacyAccountant
            from hamrah.privacy.ledger import BudgetLedger

            if dp.target_epsilon is None:
                self.accountant = PrivacyAccountant(rs, dp.accountant)
            else:
                self.ledger = (
                    BudgetLedger.resume(ledger_path, dp.target_epsilon, dp.delta, rs, dp.accountant)
                    if ledger_path
                    else BudgetLedger(dp.target_epsilon, dp.delta, rs, dp.accountant)
                )
                self.accountant = self.ledger.accountant

    def refuse_start(self, rounds: int) -> None:
        """Raise ConfigError (naming the largest feasible number) unless ``rounds`` rounds fit the budget."""
        if self.ledger is not None:
            self.ledger.refuse_start(rounds)

    def refusal(self, round_idx: int) -> str | None:
        """Return why round ``round_idx`` would take epsilon past the target, or None when it fits
        (a :class:`hamrah.loop.Budget`)."""
        if self.ledger is None:
            return None
        try:
            self.ledger.check_round()
        except BudgetExhausted as err:
            return str(err)
        return None

    def record_round(self) -> float | None:
        """Charge one round to the accountant (and save the ledger); return epsilon so far, or None."""
        if self.accountant is None:
            return None
        self.accountant.step(1)
        if self.ledger is not None and self.ledger_path:
            self.ledger.save(self.ledger_path)
        return self.epsilon()

    def epsilon(self) -> float | None:
        """Return epsilon spent so far at the configured delta, or None without DP."""
        return None if self.accountant is None or self.delta is None else self.accountant.epsilon(self.delta)

    def weight(self, num_examples: int) -> float:
        """Return the aggregation weight of a client with ``num_examples`` examples."""
        return 1.0 if self.spec.equal_weights else float(num_examples)

    def check(self, statistics: Sequence[Statistic], robust: bool = False) -> None:
        """Refuse (ConfigError with the reason) statistics or a robust aggregator this chain cannot carry
        soundly (:func:`hamrah.core.pipeline.check_statistics`)."""
        check_statistics(self.chain.stages, statistics, robust)

    def process(
        self,
        round_idx: int,
        updates: Mapping[int, Params],
        num_examples: Mapping[int, int],
        rngs: Mapping[int, np.random.Generator],
        server_rng: np.random.Generator,
        combine: CombineRule | None = None,
    ) -> RoundOutput:
        """Run the chain on one round (an empty round still releases central noise); keep the new states.

        ``updates`` are packed statistics (:func:`hamrah.core.aggregate.pack` with :meth:`weight`);
        ``combine`` is a robust rule that replaces the weighted mean of the decoded updates."""
        weights = {k: self.weight(num_examples[k]) for k in updates}
        out = process_round(
            self.chain,
            updates,
            weights,
            self.client_states,
            rngs,
            server_state=self.server_state,
            round_idx=round_idx,
            server_rng=server_rng,
            template=self.template,
            combine=combine,
            model=self.model,
        )
        self.client_states.update(out.states)
        self.server_state = out.server_state
        return out

    def wire_spec(self) -> Spec:
        """Return the names and shapes of a payload on the wire (model tensors plus auxiliary entries)."""
        return wire_spec(self.chain, self.template, self.server_state)

    def server_half(self, aggregate: Params, num_clients: int, round_idx: int, rng: np.random.Generator) -> Params:
        """Run the server halves on an aggregate computed elsewhere (the real server's Aggregators)."""
        out, self.server_state = self.chain.server(
            aggregate, self.server_state, ServerContext(round_idx, num_clients, rng)
        )
        return out


__all__ = ["PipelineRun"]
