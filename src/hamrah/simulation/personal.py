"""Score every client on its own held-out examples: the global model, and the model the client would use.

With a holdout (:meth:`hamrah.data.FederatedDataset.with_holdout`) the simulator scores, at each
evaluated round, every client that holds out examples with:

- the global model: ``local_<metric>``, what federated learning without personalization gives each user;
- its personal model, when the algorithm keeps one per client (Ditto, FedPer:
  :mod:`hamrah.algorithms.personal`; a client that has not trained yet uses the global model, or for
  FedPer the global model's initial personal layers): ``personal_<metric>``;
- or, with ``finetune``, the global model after one run of the client's local plan on its training
  examples (the "FedAvg + fine-tuning" baseline): also ``personal_<metric>``.

Each metric is averaged over clients (every client counts once, as in the personalization
literature), and accuracy also gets its 10th percentile over clients (``_p10``: how the worst-served
users fare).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from torch import nn

from hamrah.algorithms import client_update, evaluate_metrics
from hamrah.algorithms.base import Algorithm, apply_delta
from hamrah.core.errors import ConfigError
from hamrah.core.metrics import metric_values
from hamrah.core.params import Params
from hamrah.core.seeds import Stream, stream_rng
from hamrah.data.federated import FederatedDataset
from hamrah.task import Task


def personal_metrics(
    model: nn.Module,
    data: FederatedDataset,
    algorithm: Algorithm,
    global_params: Params,
    states: Mapping[int, Params],
    task: Task,
    *,
    finetune: bool = False,
    seed: int = 0,
    round_idx: int = 0,
    skip: frozenset[int] = frozenset(),
) -> dict[str, float]:
    """Return the clients' mean metrics on their held-out examples (see the module docstring).

    Args:
        model: a module of the model's architecture (its parameters are overwritten).
        data: the clients' data, with a holdout.
        algorithm: the run's algorithm (its ``personalization`` gives each client's model).
        global_params: the global model scored.
        states: each client's persistent state (the personal part), by client id.
        task: the task whose metrics are computed.
        finetune: score the global model after one local run of the algorithm's client half instead
            (only for an algorithm without personalization).
        seed, round_idx: the fine-tuning's generator (``Stream.FINETUNE``).
        skip: clients not scored (an attack's malicious clients: what the honest users get is what counts).
    """
    personal = algorithm.personalization
    ignore = data.dataset.ignore_index
    local: list[dict[str, float]] = []
    own: list[dict[str, float]] = []
    for c in range(data.num_clients):
        held = data.holdout_data(c)
        if len(held) == 0 or c in skip:
            continue
        local.append(metric_values(evaluate_metrics(model, global_params, held, ignore, task)))
        if personal is not None:
            mine = personal.personal_model(global_params, states.get(c))
        elif finetune:
            rng = stream_rng(seed, Stream.FINETUNE, round_idx, c)
            up = client_update(
                algorithm, model, global_params, data.client_data(c), rng, ignore_index=ignore, task=task
            )
            mine = apply_delta(global_params, up.result.delta)
        else:
            continue
        own.append(metric_values(evaluate_metrics(model, mine, held, ignore, task)))
    return {**_summary("local", local), **_summary("personal", own)}


def check_personal(algorithm: Algorithm, model: nn.Module, data: FederatedDataset, finetune: bool) -> None:
    """Refuse personalization that cannot run or be scored: FedPer layers the model lacks, fine-tuning
    beside a personalized algorithm, or fine-tuning without held-out examples to score.

    Raises:
        ConfigError: naming the setting and what was expected.
    """
    personal = algorithm.personalization
    if personal is not None:
        personal.check([n for n, _ in model.named_parameters()])
    if finetune and personal is not None:
        raise ConfigError(
            f"finetune with {personal.method}: its clients already keep a model of their own; expected one of them"
        )
    if finetune and data.client_holdout is None:
        raise ConfigError("finetune: no client holds out examples to score on; expected data.with_holdout(...)")


def _summary(prefix: str, per_client: list[dict[str, float]]) -> dict[str, float]:
    if not per_client:
        return {}
    out = {f"{prefix}_{k}": float(np.mean([m[k] for m in per_client])) for k in per_client[0]}
    if "accuracy" in per_client[0]:
        out[f"{prefix}_accuracy_p10"] = float(np.percentile([m["accuracy"] for m in per_client], 10))
    return out


__all__ = ["check_personal", "personal_metrics"]
