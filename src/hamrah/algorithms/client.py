"""The client half of every algorithm, one entry point for the simulator and the device runtime."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
from torch import nn

from hamrah.algorithms.base import Algorithm, ClientResult, ClientUpdate, LocalSGD
from hamrah.algorithms.local import train_local
from hamrah.algorithms.transforms import Proximal
from hamrah.core.params import Params, sub
from hamrah.data.federated import ArrayData
from hamrah.task import Task


def client_update(
    algorithm: Algorithm,
    model: nn.Module,
    global_params: Params,
    data: ArrayData,
    rng: np.random.Generator,
    *,
    client_state: Params | None = None,
    broadcast: Params | None = None,
    ignore_index: int | None = None,
    client_id: int = 0,
    plan: LocalSGD | None = None,
    task: Task | None = None,
    stop: Callable[[], bool] | None = None,
) -> ClientUpdate:
    """Run ``algorithm``'s client half on one client's data from ``global_params``.

    Args:
        algorithm: any :class:`~hamrah.algorithms.base.Algorithm`.
        model: a module of the global model's architecture (its parameters are overwritten).
        global_params: the round's global model.
        data: the client's training examples.
        rng: the client's generator for this round (batch shuffles).
        client_state: the state this client kept from its last round (None: first round).
        broadcast: the round's extra server payload, ``algorithm.broadcast(server_state)``.
        ignore_index: target value that is padding (sequence data), or None.
        client_id: written into the result.
        plan: this client's local work if it differs from ``algorithm.local_plan()`` (heterogeneous
            epochs or steps, a straggler's partial work).
        task: the task whose loss is trained (None: the built-in cross-entropy).
        stop: asked before each local step; True stops the training (``TrainingStopped``): a device that
            lost eligibility, or whose report would come too late.

    Returns:
        The :class:`ClientResult` (delta = local - global, n_k, metrics ``train_loss`` and
        ``local_steps``, the algorithm's ``aux`` payload) and the client's new state.

    Example:
        >>> up = client_update(FedAvg(0.1, LocalSGD(1, 10, 0.1)), model, params, data, rng)  # doctest: +SKIP
        >>> up.result.delta, up.state  # doctest: +SKIP
    """
    plan = plan or algorithm.local_plan()
    personal = algorithm.personalization
    if personal is not None:  # the client's own part is its state; the base algorithm keeps none
        start = personal.start(global_params, client_state)
        transforms = algorithm.local_transforms(start, broadcast, None)  # FedProx's pull: to the start
        local = train_local(model, start, data, plan, rng, ignore_index, transforms, task, stop)
        second, trained = personal.personal_pass(global_params, client_state), None
        if second is not None:  # Ditto: without DP-SGD's noise, as the personal model never leaves
            begin, pull = second
            own = dataclasses.replace(plan, example_dp=None)
            trained = train_local(
                model, begin, data, own, rng, ignore_index, [Proximal(pull, global_params)], task, stop
            ).params
        state = personal.keep(local.params, trained)
        delta, aux = personal.shared(sub(local.params, global_params)), {}
    else:
        transforms = algorithm.local_transforms(global_params, broadcast, client_state)
        local = train_local(model, global_params, data, plan, rng, ignore_index, transforms, task, stop)
        state = algorithm.next_client_state(global_params, local.params, local.steps, broadcast, client_state)
        aux = sub(state, client_state) if state is not None and client_state is not None else (state or {})
        delta = sub(local.params, global_params)
    metrics = {"train_loss": local.train_loss, "local_steps": local.steps}
    return ClientUpdate(ClientResult(client_id, delta, len(data), metrics, aux=aux), state)
