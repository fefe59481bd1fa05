"""The user's CSV files, split by hospital, train a built-in model in today's simulator (the x/y bridge)."""

from __future__ import annotations

from pathlib import Path

from hamrah.algorithms import FedAvg, LocalSGD
from hamrah.data import SourceSpec, federate, load_examples, to_dataset
from hamrah.models import build_model
from hamrah.simulation import SimulationConfig, Simulator, seeded

BREAST = Path(__file__).resolve().parents[2] / "data" / "tabular" / "breast_homo"


def test_two_hospitals_csv_files_federate_to_a_useful_model():
    features = tuple(f"x{i}" for i in range(30))
    train = load_examples(
        [BREAST / "breast_homo_guest.csv.gz", BREAST / "breast_homo_host.csv.gz"],
        SourceSpec(label="y", features=features),
    )
    test = load_examples(BREAST / "breast_homo_test.csv.gz", schema=train.schema)
    ds = to_dataset("breast", train, test)
    fed = federate(ds, "natural", 0, seed=0)  # one client per hospital file
    assert fed.num_clients == 2 and list(fed.client_sizes()) == [227, 228]
    sim = Simulator(
        seeded(lambda: build_model("logreg", ds), 0),
        fed,
        FedAvg(1.0, LocalSGD(epochs=1, batch_size=16, lr=0.1)),
        SimulationConfig(rounds=10),
    )
    last = sim.run().history[-1]
    assert last.clients == 2 and last.test_accuracy >= 0.9  # 0.947 (108 of 114) when written
