"""The commit step of a server round: merge the Aggregators' shares (or take secure aggregation's
sum), run the pipeline's and the algorithm's server halves, check the new model, evaluate it, and
make the round durable with its record. A mixin of :class:`hamrah.server.coordinator.Coordinator`
(it uses ``current``, ``master``, ``pipeline``, ``algorithm``, ``params``, ``server_state``,
``store``, ``clock``, ``run_plan``, ``test_data`` and ``model``); runs in a worker thread.
"""

from __future__ import annotations

from hamrah.algorithms.local import evaluate_metrics
from hamrah.core.errors import NotEnoughClients, ProtocolError
from hamrah.core.metrics import metric_values
from hamrah.core.params import Params
from hamrah.core.records import RoundRecord
from hamrah.loop import End
from hamrah.server import events as ev
from hamrah.server.rounds import RoundState, phase_times, round_record
from hamrah.server.secure import SecureOutcome


class CommitStep:
    """Commit the round whose reporting just closed; see the module docstring."""

    def _commit_step(self, due: ev.CommitDue) -> ev.Event:
        """Commit the round reporting just closed (may block: the server runs it in a worker thread)."""
        rs = self.current
        secure = self._secure if rs.secure_mode else None
        if secure is None:
            self._release(rs, closing=True)  # reports still held for want of a norm bound are folded in now
            if self.master.reports() < self.machine.needed():  # lost with every Aggregator
                return ev.CommitRefused(rs.round, f"{self.master.reports()} reports left after Aggregator failures")
        try:
            record, end = self._commit(rs, secure)
        except NotEnoughClients as err:  # nothing to apply: the round is repeated
            return ev.CommitRefused(rs.round, str(err))
        except ProtocolError as err:
            self.refused_aggregates += 1
            return ev.CommitRefused(rs.round, str(err))
        return ev.Committed(rs.round, record, end)

    def _commit(self, rs: RoundState, secure: SecureOutcome | None) -> tuple[RoundRecord, End | None]:
        """The commit step: merge the Aggregators' result, run the pipeline's server half and the
        algorithm's server half (the shared :class:`hamrah.loop.RoundLoop`, which refuses a model that
        is not finite), evaluate it, and make the round durable; return its record and why the run
        ends after it (None: it goes on).

        Raises:
            ProtocolError: the new model or server state is not finite (nothing is written).
            NotEnoughClients: no report reached the aggregate (every Aggregator failed).
        """
        t0 = self.clock.now()
        reports = []
        if secure is None:  # finalize may block (Ray backend): runs in a worker thread
            aggregate, reports = self.master.finalize(self.algorithm.statistics, self.aggregator)
            reported = self.master.reports()
        else:
            aggregate, reported = secure.aggregate, secure.contributors
            rs.moved("secagg", up=rs.secure.bytes_up, down=rs.secure.bytes_down)
            if rs.secure.dp_epsilon is not None:  # DP-SGD under SecAgg: the devices' JOINs said it
                self.example_epsilon = max(self.example_epsilon or 0.0, rs.secure.dp_epsilon)
            rs.personal.extend(rs.secure.personal.values())  # personalized runs: what the JOINs said
        if self.pipeline is not None:
            aggregate = self.pipeline.server_half(aggregate, reports, rs.round, reported)
        if aggregate is None:
            raise NotEnoughClients(f"round {rs.round}: no report reached the aggregate")
        train_loss = aggregate.metric("train_loss")
        t1 = self.clock.now()
        applied = self.loop.apply(rs.round, aggregate)  # AggregateRefused (a ProtocolError): not finite
        t2 = self.clock.now()
        record = self._record(rs, applied.params, reported, train_loss, secure, rs.aggregation_s + t1 - t0, t2 - t1)
        totals = self.totals() if self.totals else None
        self.store.commit(rs.round, applied.params, applied.tensors, applied.scalars, record, totals)
        return record, self.loop.commit(rs.round, applied, record.test_accuracy)

    def _record(
        self,
        rs: RoundState,
        params: Params,
        reported: int,
        train_loss: float,
        secure: SecureOutcome | None,
        aggregation_s: float,
        commit_s: float,
    ) -> RoundRecord:
        """Evaluate ``params`` if this round is evaluated; return the round's record."""
        more: dict = {}
        t0 = self.clock.now()
        plan = self.run_plan
        tested: dict[str, float] = {}
        if self.test_data is not None and plan.evaluates(rs.round):
            # the task's metrics (a built-in: loss and accuracy), merged with their reductions, as the simulator's
            m = evaluate_metrics(self.model, params, self.test_data, self.ignore_index, self.task)
            tested = metric_values(m)
            more["test_loss"], more["test_accuracy"] = tested.pop("loss", None), tested.pop("accuracy", None)
        eval_s = self.clock.now() - t0 if "test_loss" in more else None
        extra = dict(self.pipeline.record_round()) if self.pipeline is not None else {}
        extra.update({f"test_{k}": v for k, v in tested.items()})  # e.g. test_auc
        if "epsilon" in extra:
            more["epsilon"] = extra.pop("epsilon")
        elif self.example_epsilon is not None:  # DP-SGD: the largest a device reported (devices enforce it)
            more["epsilon"] = self.example_epsilon
            extra["privacy_unit"] = "example"
        if secure is not None:
            extra.update(secagg_survivors=secure.survivors)
            if secure.left_out:  # devices left out for share ciphertexts others could not open
                extra["secagg_left_out"] = secure.left_out
        now = self.clock.now()
        phases = phase_times(
            rs, aggregation_s=aggregation_s, eval_s=eval_s, commit_s=commit_s, round_s=now - rs.started
        )
        return round_record(
            rs,
            reported,
            train_loss,
            self.master.lost,
            phases,
            self.elapsed_before + now - self.started,
            extra=extra,
            **more,
        )


__all__ = ["CommitStep"]
