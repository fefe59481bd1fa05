"""One task's computation on a device (run in a worker thread by :mod:`hamrah.device.runtime`): read
the Example Store (or the installed task's records) and check it against the plan, score the global
model, train with the same client code the simulator uses (:func:`hamrah.algorithms.client_update`),
and return the update: the algorithm's statistics, or, with a pipeline, the chain's wire bytes.
A cross-silo site first scores the global model on its held-out examples.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from hamrah.algorithms import LocalSGD, build, client_update
from hamrah.algorithms.local import evaluate_metrics
from hamrah.core.aggregate import pack
from hamrah.core.errors import BudgetExhausted, DataError, ProtocolError
from hamrah.core.metrics import metric_values
from hamrah.core.params import Params
from hamrah.core.seeds import client_rng
from hamrah.core.updates import update_problem
from hamrah.device.downlink import check_checkpoint
from hamrah.device.pipeline import encode_update, plan_pipeline, uses_pipeline
from hamrah.device.secure import secure_stage
from hamrah.device.site import check_inputs, check_store, holdout, site_eval_fraction, task_data
from hamrah.device.store import ExampleStore
from hamrah.task.base import call_user
from hamrah.task.checks import check_model
from hamrah.transport.plan import Plan, example_privacy, personal_holdout

if TYPE_CHECKING:
    from hamrah.task import Task

log = logging.getLogger("hamrah.device")
TASK_METRICS = "task_metrics"  # in a task's metrics: a user task's evaluation with reductions (sent apart)
# what a report may carry when the DP guarantee holds against the server: nothing computed from the examples,
# nor the store's DP-SGD epsilon (a function of the plan and the store's example count: it would tell n_k)
PRIVATE_MODE_METRICS: tuple[str, ...] = ()


@dataclass
class TaskJob:
    """What a task's computation needs from the device: its store, its installed task (a user task's
    plan only), its client key, and the pipeline's per-client state (kept across tasks, updated in place)."""

    store: ExampleStore
    task: Task | None
    client_key: int
    pipeline_states: dict
    max_example_epsilon: float | None = None  # DP-SGD: this device's own cap, whatever the plan says
    stop: Callable[[], bool] | None = None  # asked before each local step: True stops the training

    def run(self, plan: Plan, params: Params, broadcast: Params | None) -> tuple[int, dict, Params | bytes, Any]:
        """Run the plan on the store's data; return (n, metrics, the update: its statistics' tensors,
        or with a pipeline the chain's wire bytes, and the client's new algorithm state or None)."""
        task = self.task
        if task is not None:  # the installed task (its digest checked): its records, model, loss and metrics
            data = task_data(self.store, plan, task)
            model = check_model(task, call_user(f"task {task.task_name}: model()", task.model))
            check_inputs(model, data, task)
            check_checkpoint(params, model, broadcast)
        else:
            data = self.store.read_all()
            check_store(data, plan)
            check_checkpoint(params, plan.model.build, broadcast)  # type: ignore[union-attr]
            model = plan.model.build()  # type: ignore[union-attr]

        def score(params: Params, examples) -> dict:
            """The task's metrics: loss and accuracy as floats, and (a user task) every metric with its reduction."""
            m = evaluate_metrics(model, params, examples, plan.ignore_index, task)
            values = metric_values(m)
            out = {k: values[k] for k in ("loss", "accuracy") if k in values}
            if task is not None:
                out[TASK_METRICS] = m
            return out

        held = None
        own = personal_holdout(plan.extra)  # a personalized run: scored on the device's own held-out examples
        fraction = own if own is not None else site_eval_fraction(plan.extra)
        if fraction > 0 and len(data) >= 2:  # a site: the global model is scored on its held-out examples only
            held, data = holdout(data, fraction, plan.seed, self.client_key)
        if plan.kind == "evaluate":
            scored = data if held is None else held
            return len(scored), score(params, scored), {}, None
        site_eval: dict = {}
        if held is not None and own is not None:
            site_eval = _prefixed("local", score(params, held))
        elif held is not None:  # score the global model before training on the rest
            site_eval = {f"eval_{k}" if k != TASK_METRICS else k: v for k, v in score(params, held).items()}
            site_eval["eval_examples"] = float(len(held))
        algorithm = build(**plan.algorithm)
        spend, epsilon = self._privacy_cost(plan, algorithm.local_plan(), len(data))
        rng = client_rng(plan.seed, plan.round, self.client_key)
        up = client_update(
            algorithm,
            model,
            params,
            data,
            rng,
            client_state=kept_state(self.store, params, algorithm),
            broadcast=broadcast,
            ignore_index=plan.ignore_index,
            client_id=self.client_key,
            task=task,
            stop=self.stop,
        )
        if spend:  # charged before the update can leave the device
            self.store.charge_privacy(spend)
        r = up.result
        bad = update_problem(r.delta) or update_problem(r.aux)
        if bad is not None:  # the server would refuse it: fail here, naming the cause, and send nothing
            raise DataError(f"local training diverged: update {bad} (a lower learning rate may help)")
        metrics = {k: float(v) for k, v in r.metrics.items() if isinstance(v, (int, float, np.floating))}
        local = {k: params[k] + r.delta[k] for k in r.delta}
        on_local = score(local, data)  # on local data
        on_local.pop(TASK_METRICS, None)
        metrics.update(on_local)
        metrics.update(site_eval)
        if held is not None and own is not None:  # the model this device would use, on the same examples
            personal = algorithm.personalization
            mine = personal.personal_model(params, up.state) if personal is not None else local  # else: fine-tuned
            metrics.update(_prefixed("personal", score(mine, held)), held_examples=float(len(held)))
        if epsilon is not None:  # DP-SGD: what these examples have spent, this training included (said here only)
            log.info("DP-SGD: this device's examples have now spent epsilon %.4g", epsilon)
        untrusted = _server_untrusted(plan, algorithm.local_plan())
        if untrusted:  # only what the DP guarantee covers leaves the device
            metrics = {k: v for k, v in metrics.items() if k in PRIVATE_MODE_METRICS}
        update = algorithm.client_statistics(r)  # the statistics the algorithm declares, namespaced
        equal = weighs_one(plan, algorithm.local_plan())
        if uses_pipeline(plan.extra):  # packed for the pipeline's weighted sum (w_k = n_k, or 1 under DP)
            update = pack(update, algorithm.statistics, 1.0 if equal else float(r.num_examples))
            if secure_stage(plan.extra) is None:
                update = encode_update(plan.extra, update, self.client_key, plan.round, self.pipeline_states)
        # DP-SGD, local and distributed DP weigh every report 1: its example count is no weight, only a fact
        # about the device's data the epsilon does not cover, so the report (and a secure JOIN) says 1
        return 1 if untrusted and equal else r.num_examples, metrics, update, up.state

    def _privacy_cost(self, plan: Plan, local: LocalSGD, n: int) -> tuple[list[tuple[dict, int]], float | None]:
        """Return what one DP-SGD training on ``n`` examples spends and the store's epsilon with it (none
        and None without DP-SGD), after checking it keeps the examples within the plan's target and this
        device's own cap.

        Raises:
            BudgetExhausted: the training would take the store's examples past either (the task is aborted).
            ProtocolError: the plan trains with DP-SGD but names no delta.
        """
        if local.example_dp is None:
            return [], None
        from hamrah.algorithms.dpsgd import privacy_events
        from hamrah.privacy.events import RoundSpec
        from hamrah.privacy.examples import ExampleLedger

        delta, target, accountant = example_privacy(plan.extra)
        caps = [c for c in (target, self.max_example_epsilon) if c is not None]
        ledger = ExampleLedger(delta, min(caps) if caps else None, accountant)
        ledger.charge("store", [(RoundSpec.from_dict(s), k) for s, k in self.store.privacy_spent()])
        events = privacy_events(local, n)
        if not ledger.allows("store", events):  # the epsilon is a function of n_k: logged here, not reported
            log.warning(
                "DP-SGD: one more training would take this device's examples to epsilon %.4g",
                ledger.epsilon("store", events),
            )
            raise BudgetExhausted(
                f"DP-SGD: one more training would take this device's examples past the cap "
                f"{ledger.target_epsilon:g} at delta {delta:g}"
            )
        return [(s.to_dict(), k) for s, k in events], ledger.epsilon("store", events)


def kept_state(store: ExampleStore, params: Params, algorithm) -> Params | None:
    """Return the algorithm state the store kept (SCAFFOLD's c_i, a personal model or layers), or None when
    it cannot be this model's: unreadable, other names than the algorithm keeps, a shape or dtype other
    than the parameter's, or a value not finite (a store that trained another model stopped the device
    with a KeyError, or failed every task). The round is then this client's first, as without a state."""
    try:
        state = store.client_state()
    except ProtocolError as e:
        log.warning("%s; starting this client's algorithm state afresh", e)
        return None
    if state is None:
        return None
    personal = algorithm.personalization  # FedPer keeps its personal layers only; the others the whole model
    names = set(params) if personal is None else set(personal.keep(params, params))
    fits = set(state) == names and all(
        v.shape == params[k].shape and v.dtype == params[k].dtype and bool(torch.isfinite(v).all())
        for k, v in state.items()
    )
    if not fits:
        log.warning("%s: the kept client state does not fit the plan's model; starting it afresh", store.path)
    return state if fits else None


def weighs_one(plan: Plan, local: LocalSGD) -> bool:
    """Return True when every report of the plan weighs 1 (uniform weighting, as in DP-FedAvg): the
    pipeline's DP modes, and DP-SGD, whose example-level epsilon covers the noised update but not the
    count n_k (one example more or less would change a FedAvg weight n_k, and with it the model)."""
    if local.example_dp is not None:
        return True
    return uses_pipeline(plan.extra) and plan_pipeline(plan.extra)[0].equal_weights


def _server_untrusted(plan: Plan, local: LocalSGD) -> bool:
    """Return True when the plan's DP guarantee holds against the server too: DP-SGD (example-level),
    local DP, distributed DP. Then the device's report carries no metric computed from its examples
    (training loss, the trained model's loss and accuracy on them, held-out scores): sent as they are,
    un-noised, they would give the server exactly the per-device losses a membership-inference attack
    reads, outside the mechanism the epsilon accounts for."""
    if local.example_dp is not None:
        return True
    if not uses_pipeline(plan.extra):
        return False
    dp = plan_pipeline(plan.extra)[0].dp
    return dp is not None and dp.mode in ("local", "distributed")


def _prefixed(prefix: str, scored: dict) -> dict:
    """Return ``loss`` and ``accuracy`` of ``scored`` as ``<prefix>_loss`` and ``<prefix>_accuracy``."""
    return {f"{prefix}_{k}": v for k, v in scored.items() if k in ("loss", "accuracy")}


__all__ = ["PRIVATE_MODE_METRICS", "TASK_METRICS", "TaskJob", "weighs_one"]
