"""The server's own update on a small clean root set, for aggregators that score clients against it
(FLTrust, Cao et al. 2021, *FLTrust: Byzantine-robust Federated Learning via Trust Bootstrapping*)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
from torch import nn

from hamrah.algorithms.base import Algorithm
from hamrah.algorithms.client import client_update
from hamrah.core.aggregate import view
from hamrah.core.errors import ConfigError
from hamrah.core.params import Params
from hamrah.data.federated import ArrayData, FederatedDataset
from hamrah.task import Task


def needs_reference(aggregator: object) -> bool:
    """Return True when ``aggregator`` scores clients against a server update (``with_reference``)."""
    return bool(getattr(aggregator, "needs_reference", False))


class RootReference:
    """The server's update g_0 each round: the algorithm's client half run on a root set.

    The root set is ``root_size`` training examples drawn without replacement with ``rng`` from the
    pooled training data, as in Cao et al. 2021 (sampled uniformly from the clients' clean data). The
    server runs as many local SGD steps as a client of average size (the paper uses the same local
    iterations for server and clients).

    Raises:
        ConfigError: the root set is empty or larger than the training data, or the algorithm declares
            no statistic a robust rule may combine.
    """

    def __init__(
        self,
        model: nn.Module,
        data: FederatedDataset,
        algorithm: Algorithm,
        root_size: int,
        rng: np.random.Generator,
        task: Task | None = None,
    ):
        train = data.dataset.train
        if not 0 < root_size <= len(train):
            raise ConfigError(
                f"aggregator root set of {root_size} examples: expected 1..{len(train)} "
                "(the server's update needs a non-empty root set drawn from the training data)"
            )
        robust = [s for s in algorithm.statistics if s.robust]
        if len(robust) != 1:
            raise ConfigError(
                f"algorithm {algorithm.name} with a root-set aggregator (FLTrust): expected exactly one "
                f"statistic a robust rule may combine, it declares {[s.name for s in robust]}"
            )
        self.statistic = robust[0]
        ix = torch.as_tensor(np.sort(rng.choice(len(train), size=root_size, replace=False)), dtype=torch.long)
        self.root = ArrayData(train.x[ix], train.y[ix])
        self.model, self.algorithm, self.ignore_index, self.task = model, algorithm, data.dataset.ignore_index, task
        plan = algorithm.local_plan()
        self.plan = replace(plan, num_steps=plan.steps(round(float(np.mean(data.client_sizes())))))

    def update(self, params: Params, broadcast: Params | None, rng: np.random.Generator) -> Params:
        """Return g_0: the robust statistic the clients send (their delta; FedNova's delta / ||a||_1),
        computed the same way from the server's local training on the root set."""
        up = client_update(
            self.algorithm,
            self.model,
            params,
            self.root,
            rng,
            broadcast=broadcast,
            ignore_index=self.ignore_index,
            client_id=-1,
            plan=self.plan,
            task=self.task,
        )
        return view(self.algorithm.client_statistics(up.result), self.statistic)
