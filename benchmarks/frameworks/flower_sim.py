"""The workload in Flower 1.x's simulation runtime (Message API: ClientApp + ServerApp, FedAvg strategy,
Ray backend, one virtual SuperNode per client, one Ray actor per CPU core)."""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from common import BATCH, CLIENTS, EPOCHS, FRACTION, LR, ROUNDS, accuracy, iid_split, load, report, two_nn
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg
from flwr.simulation import run_simulation

_DATA: dict = {}


def _data():
    """MNIST and the split, loaded once per process (each Ray actor loads its own copy)."""
    if not _DATA:
        x, y, xt, yt = load()
        _DATA.update(x=x, y=y, xt=xt, yt=yt, parts=iid_split(len(x)))
    return _DATA


client = ClientApp()


@client.train()
def train(msg: Message, context: Context) -> Message:
    d = _data()
    idx = torch.as_tensor(d["parts"][int(context.node_config["partition-id"])])
    x, y = d["x"][idx], d["y"][idx]
    model = two_nn()
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    for _ in range(EPOCHS):
        perm = torch.randperm(len(idx))
        for i in range(0, len(idx), BATCH):
            b = perm[i : i + BATCH]
            opt.zero_grad()
            F.cross_entropy(model(x[b]), y[b]).backward()
            opt.step()
    content = RecordDict(
        {"arrays": ArrayRecord(model.state_dict()), "metrics": MetricRecord({"num-examples": len(idx)})}
    )
    return Message(content=content, reply_to=msg)


server = ServerApp()


@server.main()
def main(grid: Grid, context: Context) -> None:
    torch.manual_seed(0)
    model = two_nn()
    strategy = FedAvg(
        fraction_train=FRACTION,
        fraction_evaluate=0.0,
        min_train_nodes=int(CLIENTS * FRACTION),
        min_available_nodes=CLIENTS,
    )

    def central(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        if server_round != ROUNDS:  # one evaluation, after the last round
            return None
        d = _data()
        model.load_state_dict(arrays.to_torch_state_dict())
        acc = accuracy(model, d["xt"], d["yt"])
        report("Flower (simulation, Ray)", acc, cpus=os.cpu_count())
        return MetricRecord({"accuracy": acc})

    strategy.start(grid=grid, initial_arrays=ArrayRecord(model.state_dict()), num_rounds=ROUNDS, evaluate_fn=central)


if __name__ == "__main__":
    run_simulation(
        server_app=server,
        client_app=client,
        num_supernodes=CLIENTS,
        backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}},
    )
