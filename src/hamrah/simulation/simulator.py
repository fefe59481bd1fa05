"""The fast in-process driver: sample a cohort, train it (batched when the model allows), aggregate,
evaluate every ``eval_every`` rounds. Deterministic under one seed. The run's rounds are the shared
:class:`hamrah.loop.RoundLoop`, pumped by :func:`hamrah.loop.drive` with the simulator as its runner.

Only the cohort's data and models are materialised in a round, so memory grows with the cohort size,
not with the population.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from hamrah.aggregation.base import RobustAggregator
from hamrah.algorithms.aggregate import contributions
from hamrah.algorithms.base import Algorithm, ClientResult, check_buffers
from hamrah.algorithms.local import evaluate_metrics
from hamrah.core.aggregate import Aggregate, Contribution, aggregate_contributions, robust_mean, statistics_template
from hamrah.core.errors import NotEnoughClients
from hamrah.core.metrics import merge_metrics, metric_values
from hamrah.core.params import Params, model_state
from hamrah.core.records import RoundRecord
from hamrah.core.seeds import Stream, stream_rng
from hamrah.core.updates import update_problem
from hamrah.data.federated import ArrayData, FederatedDataset
from hamrah.loop import AggregateRefused, RoundLoop, drive
from hamrah.pipeline import PipelineRun, PipelineSpec
from hamrah.simulation import example_privacy
from hamrah.simulation.cohort import sample_cohort
from hamrah.simulation.config import Attack, SimulationConfig, SimulationResult
from hamrah.simulation.heterogeneity import BUDGET_SPENT, DROPPED, STRAGGLER, draw_work
from hamrah.simulation.parallel import Pool, RoundTask, open_pool, train_clients
from hamrah.simulation.personal import check_personal, personal_metrics
from hamrah.simulation.placement import placement
from hamrah.simulation.reference import RootReference, needs_reference
from hamrah.task import DEFAULT_TASK, Task

if TYPE_CHECKING:  # dp_accounting loads only for a DP-SGD run
    from hamrah.privacy.examples import ExampleLedger

log = logging.getLogger("hamrah.simulation")


class Simulator:
    """Drive ``algorithm`` over ``data``'s clients with ``model``.

    Args:
        model, data, algorithm, config: what to run and how.
        aggregator: a robust aggregator that replaces the weighted mean of the statistics the algorithm
            declares robust (the delta), or None.
        attack: optional :class:`Attack` hook (malicious clients' data and updates), or None.
        pipeline: the client-update pipeline (compression, DP) applied in :meth:`aggregate`, or None.
        task: the task whose loss clients train and whose metrics the test set is scored with (None: the
            built-in cross-entropy classification). A user's task trains in-process unless ``workers`` is set.
        example_ledger: each client's example-level privacy spend, needed when the algorithm trains with
            DP-SGD (its local plan's ``example_dp``): a client whose next training would pass the
            ledger's target sits the round out, the run ends when no client can train, and the records'
            ``epsilon`` is the largest any client has spent.
        finetune: with a holdout in ``data``, score each client's global model after one local run of its
            client half (FedAvg + fine-tuning; :mod:`hamrah.simulation.personal`).

    With a holdout in ``data`` (:meth:`~hamrah.data.FederatedDataset.with_holdout`) every evaluated
    round also scores each client on its own held-out examples: the global model (``local_*``) and the
    client's own model (``personal_*``: the algorithm's personalization, or ``finetune``); under an
    attack, the honest clients only.

    A round (:meth:`run_round`, the :class:`hamrah.loop.Runner` half of the shared loop): sample the
    cohort, draw each client's work, run the client half (batched for plain SGD on MLPs, else
    :func:`hamrah.algorithms.client_update` in-process or in workers), then :meth:`aggregate`, the one
    place between local training and the algorithm's ``apply``: it turns the round's results into the
    algorithm's statistics and those into one :class:`~hamrah.core.aggregate.Aggregate` (weighted mean,
    robust rule, or the pipeline). The loop (``self.loop``) applies it, refuses a model that is not
    finite, and decides when the run ends.

    Example:
        >>> sim = Simulator(model, fed, FedAvg(0.1, LocalSGD(1, 10, 0.1)), SimulationConfig(rounds=5))  # doctest: +SKIP
        >>> result = sim.run()  # doctest: +SKIP
    """

    def __init__(
        self,
        model: nn.Module,
        data: FederatedDataset,
        algorithm: Algorithm,
        config: SimulationConfig,
        *,
        aggregator: RobustAggregator | None = None,
        attack: Attack | None = None,
        pipeline: PipelineSpec | None = None,
        task: Task | None = None,
        example_ledger: ExampleLedger | None = None,
        finetune: bool = False,
    ):
        self.model, self.data, self.algorithm, self.config = model, data, algorithm, config
        self.aggregator, self.attack = aggregator, attack
        self.task = DEFAULT_TASK if task is None else task
        self.reference = (
            RootReference(model, data, algorithm, aggregator.root_size, stream_rng(config.seed, Stream.ROOT), self.task)
            if needs_reference(aggregator)
            else None
        )  # FLTrust's root set and server update
        check_buffers(algorithm, model)
        check_personal(algorithm, model, data, finetune)
        self.finetune = finetune
        params = model_state(model)  # parameters and BatchNorm buffers
        self.loop = RoundLoop(algorithm, config.plan, params, algorithm.init_server_state(params))
        self.client_states: dict[int, Params] = {}
        self._pending_states: dict[int, Params] = {}  # this round's, until it is adopted
        self.cohort = algorithm.cohort_size(data.num_clients)
        self.batched, self.workers = placement(
            model, algorithm, self.task, config, self.cohort, self.params, self.loop.broadcast()
        )
        self._pool: Pool | None = None
        self.pipeline = self._pipeline_run(pipeline)
        self.examples = example_privacy.checked_ledger(algorithm, example_ledger)
        self.loop.budget = self
        self._started = time.perf_counter()
        self.round_bytes: tuple[int, int] | None = None  # (up, down) of the last round through the pipeline
        self.bytes_total = [0, 0]  # (up, down) over the run
        self.refused = 0  # client updates refused by hamrah.core.updates (NaN/inf, wrong names or shapes)
        self.refused_aggregates = 0  # rounds whose new model was not finite (kept the old one, as the server)
        self.skipped_rounds = 0  # rounds whose reports were too few for the robust rule (the model kept)

    @property
    def params(self) -> Params:
        """The global model (the loop's)."""
        return self.loop.params

    @params.setter
    def params(self, params: Params) -> None:
        self.loop.params = params

    @property
    def server_state(self) -> object:
        """The algorithm's server state (the loop's)."""
        return self.loop.state

    @server_state.setter
    def server_state(self, state: object) -> None:
        self.loop.state = state

    def _pipeline_run(self, spec: PipelineSpec | None) -> PipelineRun | None:
        if spec is None:
            return None
        spec.check_model(self.model)
        run = PipelineRun(spec, statistics_template(self.algorithm.statistics, self.params), model=self.params)
        run.check(self.algorithm.statistics, robust=self.aggregator is not None)
        run.refuse_start(self.config.rounds)
        return run

    def refusal(self, round_idx: int) -> str | None:
        """Return why round ``round_idx`` may not run (the pipeline's privacy budget, or every client's
        example-level budget spent), or None (the loop's :class:`hamrah.loop.Budget`)."""
        why = self.pipeline.refusal(round_idx) if self.pipeline is not None else None
        if why is None and self.examples is not None:
            why = example_privacy.exhausted(self.examples, self.algorithm.local_plan(), self.data.client_sizes())
        return why

    def sample(self, round_idx: int) -> np.ndarray:
        """Return the sorted client ids of round ``round_idx``'s cohort."""
        spec = self.pipeline.spec if self.pipeline is not None else None
        return sample_cohort(self.config.seed, round_idx, self.data.num_clients, self.cohort, spec)

    def train_round(self, round_idx: int) -> list[ClientResult]:
        """Run the client half for the round's cohort; return each client's result (failures as errors)."""
        seed = self.config.seed
        ids = [int(c) for c in self.sample(round_idx)]
        sizes = [len(self.data.client_indices[c]) for c in ids]
        work = draw_work(
            self.config.heterogeneity, self.algorithm.local_plan(), sizes, stream_rng(seed, Stream.WORK, round_idx)
        )
        failed = {c: DROPPED for c, w in zip(ids, work) if w.dropped}
        if not self.algorithm.accepts_partial_work:
            failed.update({c: STRAGGLER for c, w in zip(ids, work) if w.straggler and not w.dropped})
        if self.examples is not None:  # DP-SGD: a client past its example-level budget sits out
            pending = [(c, n, w.plan) for c, n, w in zip(ids, sizes, work) if c not in failed]
            failed.update(dict.fromkeys(example_privacy.over_budget(self.examples, pending), BUDGET_SPENT))
        run = [(c, n, w.plan) for c, n, w in zip(ids, sizes, work) if c not in failed]
        updates = self._train([c for c, _, _ in run], [n for _, n, _ in run], [p for _, _, p in run], round_idx)
        if self.examples is not None:
            example_privacy.charge(self.examples, run)
        # kept once the round is adopted, for the clients whose updates passed (finish_round), as on devices
        self._pending_states = {c: u.state for c, u in updates.items() if u.state is not None}
        return [
            updates[c].result if c not in failed else ClientResult(c, {}, n, error=failed[c])
            for c, n in zip(ids, sizes)
        ]

    def _train(self, ids: list[int], sizes: list[int], plans: list, round_idx: int) -> dict:
        task = RoundTask(
            self.algorithm,
            self.params,
            ids,
            plans,
            self.config.seed,
            round_idx,
            self.batched,
            broadcast=self.loop.broadcast(),
            states={c: self.client_states[c] for c in ids if c in self.client_states},
            data=self._poisoned_data(ids, round_idx),
        )
        if not ids:
            return {}
        if self.workers > 1 or self.config.backend == "ray":
            if self._pool is None:
                self._pool = open_pool(self.config.backend, self.model, self.data, self.workers, self.task)
                self.workers = self._pool.workers
            return self._pool.train(task, sizes)
        return dict(zip(ids, train_clients(self.model, self.data, task, self.task)))

    def _poisoned_data(self, ids: list[int], round_idx: int) -> dict[int, ArrayData]:
        if self.attack is None:
            return {}
        return {
            c: self.attack.poison_data(
                c, self.data.client_data(c), stream_rng(self.config.seed, Stream.ATTACK, round_idx, c)
            )
            for c in ids
            if self.attack.is_malicious(c)
        }

    def aggregate(self, round_idx: int, results: list[ClientResult]) -> Aggregate | None:
        """Apply the attack's update poisoning, check each update, and aggregate the clients' statistics.

        This is the single point between local training and the algorithm's ``apply``. Returns the
        round's aggregate (None when no client reported and no pipeline released noise: the model stays).
        """
        if self.attack is not None:
            mal = [r for r in results if r.error is None and self.attack.is_malicious(r.client_id)]
            ben = [r for r in results if not (r.error is None and self.attack.is_malicious(r.client_id))]
            poisoned = self.attack.poison_updates(mal, ben, stream_rng(self.config.seed, Stream.ATTACK, round_idx))
            results = sorted(ben + list(poisoned), key=lambda r: r.client_id)
        results = [self._validated(r) for r in results]  # the server's check: refused, counted
        ok = [r for r in results if r.error is None and r.num_examples > 0]
        passed = {r.client_id for r in ok}
        self._pending_states = {c: s for c, s in self._pending_states.items() if c in passed}
        return self._aggregate(round_idx, ok)

    # --- the runner of the shared loop (hamrah.loop.Runner) ---------------------------------------

    def run_round(self, round_idx: int) -> Aggregate | None:
        """Train round ``round_idx``'s cohort and return the aggregate of their statistics (or None)."""
        return self.aggregate(round_idx, self.train_round(round_idx))

    def aggregate_refused(self, round_idx: int, error: AggregateRefused) -> None:
        """The round's new model is not finite: counted, the model kept (the server's commit refuses it too)."""
        self.refused_aggregates += 1
        log.warning("%s: the round is refused, the model kept", error)

    def finish_round(self, round_idx: int, aggregate: Aggregate | None, scored: Params | None) -> RoundRecord | None:
        """Charge the round to the privacy accountant; score ``scored`` and return the record, if given."""
        if aggregate is not None and self.algorithm.stateful_clients:  # adopted: the clients' states move with it
            self.client_states.update(self._pending_states)
        self._pending_states = {}
        epsilon = self.pipeline.record_round() if self.pipeline is not None else None
        if scored is None:
            return None
        if self.examples is not None:  # DP-SGD: the largest example-level epsilon any client has spent
            epsilon = self.examples.worst()
        metrics = self.evaluate_metrics(scored)
        acc, loss = metrics.pop("accuracy", None), metrics.pop("loss", None)
        count = aggregate.count if aggregate is not None else 0
        train_loss = aggregate.metric("train_loss") if count else float("nan")
        up, down = self.round_bytes if self.pipeline is not None else (None, None)
        extra = {f"test_{k}": v for k, v in metrics.items()}
        if self.data.client_holdout is not None:
            extra.update(
                personal_metrics(
                    self.model,
                    self.data,
                    self.algorithm,
                    scored,
                    self.client_states,
                    self.task,
                    finetune=self.finetune,
                    seed=self.config.seed,
                    round_idx=round_idx,
                    skip=self.attack.malicious if self.attack is not None else frozenset(),
                )
            )
        elapsed = time.perf_counter() - self._started
        return RoundRecord(round_idx, acc, loss, train_loss, count, elapsed, up, down, epsilon, extra=extra)

    def _rule(self, round_idx: int):
        """Return the robust rule of the round (FLTrust: with this round's root-set reference), or None."""
        rule = self.aggregator
        if rule is not None and self.reference is not None:
            rule = rule.with_reference(
                self.reference.update(
                    self.params,
                    self.loop.broadcast(),
                    stream_rng(self.config.seed, Stream.ROOT, round_idx),
                )
            )
        return rule

    def _aggregate(self, round_idx: int, ok: list[ClientResult]) -> Aggregate | None:
        """Return the aggregate of the clients' statistics (the pipeline's when configured), or None."""
        contribs = contributions(self.algorithm, ok, example_privacy.weight_of(self.examples, self.pipeline))
        rule = self._rule(round_idx)
        try:
            if self.pipeline is not None:
                return self._through_pipeline(round_idx, contribs, rule)
            # float32 sums for a cohort of tens (as the simulator always summed); the server keeps float64
            return aggregate_contributions(contribs, self.algorithm.statistics, rule, torch.float32)
        except NotEnoughClients as e:  # none reported (recorded with 0 clients), or too few for the robust rule
            if ok:
                self.skipped_rounds += 1
                log.warning("round %d: %s; the round is skipped, the model kept", round_idx, e)
            return None

    def _validated(self, r: ClientResult) -> ClientResult:
        problem = None if r.error is not None else (update_problem(r.delta, self.params) or update_problem(r.aux))
        if problem is None:
            return r
        self.refused += 1
        return ClientResult(r.client_id, {}, r.num_examples, r.metrics, error=f"refused: {problem}")

    def _through_pipeline(self, round_idx: int, contribs: list[Contribution], rule) -> Aggregate:
        """Encode each client's packed statistics through the chain, aggregate, run the server halves; return
        the aggregate (an empty round still carries central noise, applied with weight 1)."""
        seed, stats = self.config.seed, self.algorithm.statistics
        combine = None if rule is None else (lambda updates, weights: robust_mean(updates, weights, stats, rule))
        out = self.pipeline.process(
            round_idx,
            {c.client_id: c.stats for c in contribs},
            {c.client_id: c.weight for c in contribs},
            {c.client_id: stream_rng(seed, Stream.PIPELINE, round_idx, c.client_id) for c in contribs},
            stream_rng(seed, Stream.PIPELINE, round_idx),
            combine,
        )
        self.round_bytes = (out.bytes.total_up, out.bytes.total_down)
        self.bytes_total = [self.bytes_total[0] + out.bytes.total_up, self.bytes_total[1] + out.bytes.total_down]
        for client, why in out.refused.items():  # its codec cannot carry the update: refused, as the server would
            self.refused += 1
            self._pending_states.pop(client, None)
            log.warning("round %d: client %d refused: %s", round_idx, client, why)
        contribs = [c for c in contribs if c.client_id not in out.refused]
        weight = sum(c.weight for c in contribs)
        metrics: dict = {}
        for c in contribs:
            metrics = merge_metrics(metrics, c.metrics)
        return Aggregate.from_mean(out.aggregate, weight if weight > 0 else 1.0, len(contribs), metrics)

    def close(self) -> None:
        """Stop the worker processes, if any."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def evaluate_metrics(self, params: Params | None = None) -> dict[str, float]:
        """Return the task's metrics of ``params`` (default: the global model) on the test set (NaN: no
        test examples)."""
        test, params = self.data.dataset.test, self.params if params is None else params
        return metric_values(evaluate_metrics(self.model, params, test, self.data.dataset.ignore_index, self.task))

    def evaluate(self) -> tuple[float, float]:
        """Return (test loss, test accuracy) of the current global model (NaN where the task has none)."""
        m = self.evaluate_metrics()
        return m.get("loss", float("nan")), m.get("accuracy", float("nan"))

    def run(
        self,
        on_round: Callable[[RoundRecord], None] | None = None,
        *,
        start_round: int = 1,
        after_round: Callable[[int], None] | None = None,
    ) -> SimulationResult:
        """Run rounds ``start_round``.. ``config.rounds``; call ``on_round`` after each evaluation and
        ``after_round(r)`` after every round (a checkpoint hook: :mod:`hamrah.simulation.resume`)."""
        self.loop = RoundLoop(self.algorithm, self.config.plan, self.params, self.server_state, start_round - 1, self)
        result = SimulationResult(self.params)

        def recorded(record: RoundRecord) -> None:
            result.history.append(record)
            if on_round is not None:
                on_round(record)

        self._started = time.perf_counter()
        try:
            end = drive(self.loop, self, recorded, after_round)
        finally:
            self.close()
        if end is not None and end.reason == "budget":
            result.stopped = end.message
        result.params = self.params
        return result
