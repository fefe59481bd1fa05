"""The workload in pfl-research 0.x (``pfl``): FederatedAveraging on a SimulatedBackend, a PyTorchModel,
a FederatedDataset sampling 10 of 100 users a round; the central optimizer is SGD with lr 1 (FedAvg)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from common import BATCH, CLIENTS, COHORT, EPOCHS, LR, ROUNDS, accuracy, iid_split, load, report, two_nn
from pfl.aggregate.simulate import SimulatedBackend
from pfl.algorithm import FederatedAveraging, NNAlgorithmParams
from pfl.data.dataset import Dataset
from pfl.data.federated_dataset import FederatedDataset
from pfl.data.sampling import get_user_sampler
from pfl.hyperparam import NNEvalHyperParams, NNTrainHyperParams
from pfl.metrics import Weighted
from pfl.model.pytorch import PyTorchModel


class TwoNN(torch.nn.Module):
    """The 2NN with the ``loss`` and ``metrics`` methods pfl's PyTorchModel calls."""

    def __init__(self):
        super().__init__()
        self.net = two_nn()

    def forward(self, x):
        return self.net(x)

    def loss(self, x, y, eval=False):
        self.eval() if eval else self.train()
        return F.cross_entropy(self(x), y)

    @torch.no_grad()
    def metrics(self, x, y, eval=True):
        logits = self(x)
        return {
            "loss": Weighted(float(F.cross_entropy(logits, y, reduction="sum")), len(y)),
            "accuracy": Weighted(float((logits.argmax(1) == y).sum()), len(y)),
        }


def main() -> None:
    torch.manual_seed(0)
    x, y, xt, yt = load()
    parts = iid_split(len(x))
    users = FederatedDataset(
        lambda uid: Dataset(raw_data=[x[parts[uid]], y[parts[uid]]]), get_user_sampler("random", list(range(CLIENTS)))
    )
    module = TwoNN()
    model = PyTorchModel(
        model=module,
        local_optimizer_create=torch.optim.SGD,
        central_optimizer=torch.optim.SGD(module.parameters(), lr=1.0),
    )
    backend = SimulatedBackend(training_data=users, val_data=None)
    FederatedAveraging().run(
        algorithm_params=NNAlgorithmParams(
            central_num_iterations=ROUNDS, evaluation_frequency=ROUNDS + 1, train_cohort_size=COHORT, val_cohort_size=0
        ),
        backend=backend,
        model=model,
        model_train_params=NNTrainHyperParams(local_learning_rate=LR, local_num_epochs=EPOCHS, local_batch_size=BATCH),
        model_eval_params=NNEvalHyperParams(local_batch_size=None),
    )
    report("pfl-research", accuracy(module, xt, yt))


if __name__ == "__main__":
    main()
