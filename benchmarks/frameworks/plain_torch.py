"""The workload as a plain sequential PyTorch loop: clients one after another, weighted mean of state dicts."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from common import BATCH, CLIENTS, COHORT, EPOCHS, LR, ROUNDS, accuracy, iid_split, load, report, two_nn


def main() -> None:
    torch.manual_seed(0)
    x, y, xt, yt = load()
    parts = iid_split(len(x))
    model = two_nn()
    global_state = {k: v.clone() for k, v in model.state_dict().items()}
    rng, gen = np.random.default_rng(1), torch.Generator().manual_seed(0)
    for _ in range(ROUNDS):
        ids = rng.choice(CLIENTS, COHORT, replace=False)
        total = sum(len(parts[c]) for c in ids)
        new_state = {k: torch.zeros_like(v) for k, v in global_state.items()}
        for c in ids:
            idx = torch.as_tensor(parts[c])
            xc, yc = x[idx], y[idx]
            model.load_state_dict(global_state)
            opt = torch.optim.SGD(model.parameters(), lr=LR)
            for _ in range(EPOCHS):
                perm = torch.randperm(len(idx), generator=gen)
                for i in range(0, len(idx), BATCH):
                    b = perm[i : i + BATCH]
                    opt.zero_grad()
                    F.cross_entropy(model(xc[b]), yc[b]).backward()
                    opt.step()
            for k, v in model.state_dict().items():
                new_state[k] += v * (len(idx) / total)
        global_state = new_state
    model.load_state_dict(global_state)
    report("plain PyTorch loop", accuracy(model, xt, yt))


if __name__ == "__main__":
    main()
