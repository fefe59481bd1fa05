"""Breast-cancer diagnosis across two hospitals: each hospital's CSV file is one client."""

from pathlib import Path

from torch import nn

import hamrah

DATA = Path(__file__).resolve().parents[2] / "data" / "tabular" / "breast_homo"
FEATURES = [f"x{i}" for i in range(30)]


class Hospital(hamrah.BinaryTask):
    name = "hospital"

    def __init__(self, hidden: int = 16):
        self.hidden = hidden

    def model(self) -> nn.Module:
        return nn.Sequential(nn.Linear(30, self.hidden), nn.ReLU(), nn.Linear(self.hidden, 2))

    def data(self):
        hospitals = [DATA / "breast_homo_guest.csv.gz", DATA / "breast_homo_host.csv.gz"]
        return self.read_tables(hospitals, DATA / "breast_homo_test.csv.gz", label="y", features=FEATURES)
